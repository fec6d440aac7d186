"""Turn an admin change page back into the POST data its form would send, so tests edit only what they mean."""

from __future__ import annotations

from typing import Any

from django import forms


def form_data(form: forms.BaseForm) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for name, field in form.fields.items():
        value = form[name].value()
        key = form.add_prefix(name)
        if isinstance(field, forms.BooleanField):
            if value:
                data[key] = "on"
            continue
        if value is not None:
            data[key] = value  # BoundField.value() is already what the widget renders (JSON text, pk)
    return data


def change_page_data(response: Any) -> dict[str, Any]:
    """The main form and every inline formset (with its management form) of an admin change page."""
    data = form_data(response.context["adminform"].form)
    for inline in response.context["inline_admin_formsets"]:
        formset = inline.formset
        data.update(form_data(formset.management_form))
        for form in formset.forms:
            data.update(form_data(form))
    return data
