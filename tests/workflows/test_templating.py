import pytest

from workflows.templating import TemplateError, references, render_inputs

SCOPE = {
    "context": {"host": "db01", "ports": [22, 443], "meta": {"team": "ops"}},
    "steps": {"scan": {"output": {"count": 2, "findings": [{"id": "A"}, {"id": "B"}]}}},
    "run": {"id": "r1", "workflow": "wf", "trigger": "api"},
}


def test_a_whole_reference_keeps_its_json_type() -> None:
    rendered = render_inputs({"n": "{{ steps.scan.output.count }}", "ports": "{{context.ports}}"}, SCOPE)
    assert rendered == {"n": 2, "ports": [22, 443]}


def test_references_inside_text_are_interpolated() -> None:
    rendered = render_inputs({"msg": "{{ context.host }} has {{ steps.scan.output.count }} findings"}, SCOPE)
    assert rendered == {"msg": "db01 has 2 findings"}


def test_list_items_are_addressed_by_index_in_nested_structures() -> None:
    rendered = render_inputs(
        {"first": ["{{ steps.scan.output.findings.1.id }}", {"t": "{{ context.meta.team }}"}]}, SCOPE
    )
    assert rendered == {"first": ["B", {"t": "ops"}]}


def test_a_missing_reference_fails_naming_it_and_where() -> None:
    with pytest.raises(TemplateError, match=r"missing reference 'steps.scan.output.nope' in inputs.deep.x"):
        render_inputs({"deep": {"x": "{{ steps.scan.output.nope }}"}}, SCOPE)


def test_default_supplies_a_missing_value() -> None:
    assert render_inputs({"t": '{{ context.target | default("localhost") }}'}, SCOPE) == {"t": "localhost"}
    assert render_inputs({"t": "{{ context.host | default(1) }}"}, SCOPE) == {"t": "db01"}


def test_expressions_are_not_code() -> None:
    with pytest.raises(TemplateError, match="is not a reference"):
        render_inputs({"x": "{{ __import__('os').system('true') }}"}, SCOPE)


def test_references_lists_what_a_template_uses() -> None:
    assert references({"a": "{{ context.x }} {{ steps.s.output.y | default(0) }}", "b": ["{{run.id}}"]}) == [
        "context.x",
        "steps.s.output.y",
        "run.id",
    ]
