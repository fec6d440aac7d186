import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import finish
from workflows.models import RunStatus, Workflow
from workflows.services import trigger_workflow
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


# --- Several references in one string, and one grammar for validation and rendering ---------------------

PORTS = {"context": {"host": "db01", "port": 5432, "path": "/x"}}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ context.host }}:{{ context.port }}", "db01:5432"),
        ("{{context.host}}{{context.port}}", "db015432"),
        ("{{ context.host }}{{ context.host }} and {{ context.host }}", "db01db01 and db01"),
        ("postgres://{{ context.host }}:{{ context.port }}{{ context.path }}?x={{ context.port }}", None),
        ('{{ context.nope | default("a") }}-{{ context.nope | default({"k": {"n": 1}}) }}', 'a-{"k": {"n": 1}}'),
        ("}} text {{ context.host }} }}", "}} text db01 }}"),
    ],
    ids=["colon", "adjacent", "repeated", "url", "defaults-with-braces", "stray-closers"],
)
def test_a_string_may_hold_any_number_of_references(template: str, expected: str | None) -> None:
    rendered = render_inputs({"x": template}, PORTS)["x"]
    assert rendered == (expected or "postgres://db01:5432/x?x=5432")
    references(template)  # what renders also validates


def test_a_single_reference_with_surrounding_space_keeps_its_type_and_two_do_not() -> None:
    assert render_inputs({"p": "  {{ context.port }} "}, PORTS) == {"p": 5432}
    assert render_inputs({"p": "{{ context.port }}{{ context.port }}"}, PORTS) == {"p": "54325432"}


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{ {{ context.host }} }}", r"'\{\{ context.host' is not a reference"),
        ("{{ context.{{ host }} }}", "is not a reference"),
        ("{{ context.host }} and {{ context.port", "never closed"),
        ("{{ context.host | upper }}", "is not a reference"),
        ("{{ context.host | default(nope) }}", "default value in inputs.x is not JSON"),
        ("{{ context.host | default(1, 2) }}", r"default\(...\) takes one JSON value"),
        ("{{ }}", "is not a reference"),
        ("{{{ context.host }}}", "is not a reference"),
    ],
    ids=["nested", "nested-inside-a-path", "unclosed", "filter", "default-not-json", "default-two", "empty", "triple"],
)
def test_what_the_grammar_refuses_is_refused_alike_by_validation_and_rendering(template: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        references({"x": template})
    with pytest.raises(TemplateError, match=message):
        render_inputs({"x": template}, PORTS)


class Everything(dict):  # type: ignore[type-arg]
    """A scope in which every path exists, so rendering can only fail on the grammar."""

    def __contains__(self, key: object) -> bool:
        return True

    def __getitem__(self, key: object) -> "Everything":
        return self


_FRAGMENTS = st.sampled_from(
    ["{{", "}}", "{", "}", " ", "context", ".", "host", "steps.a.output", "|", "default", "(", ")", '"d"', "1", "x"]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_FRAGMENTS, max_size=14).map("".join) | st.text(max_size=40))
def test_validation_accepts_exactly_what_rendering_accepts(template: str) -> None:
    try:
        references({"x": template})
    except TemplateError as refused:
        with pytest.raises(TemplateError) as also:
            render_inputs({"x": template}, Everything())
        assert str(also.value) == str(refused)
    else:
        render_inputs({"x": template}, Everything())


_LITERAL = st.text(alphabet=st.characters(blacklist_characters="{", blacklist_categories=["Cs"]), max_size=8)
_VALUES = {"a": "A", "b": 7, "c": [1, "two"], "d": None}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(_LITERAL, st.sampled_from(sorted(_VALUES)).map(lambda k: ("ref", k))), max_size=8))
def test_every_reference_in_a_string_is_rendered_in_place(parts: list[Any]) -> None:
    template = "".join(f"{{{{ context.{p[1]} }}}}" if isinstance(p, tuple) else p for p in parts)
    refs = [p for p in parts if isinstance(p, tuple)]
    rendered = render_inputs({"x": template}, {"context": _VALUES})["x"]
    if len(refs) == 1 and all(isinstance(p, tuple) or not p.strip() for p in parts):
        assert rendered == _VALUES[refs[0][1]]
    else:
        expected = "".join(
            (v if isinstance(v := _VALUES[p[1]], str) else json.dumps(v)) if isinstance(p, tuple) else p for p in parts
        )
        assert rendered == expected
    assert references({"x": template}) == [f"context.{k}" for _, k in refs]


def test_a_workflow_with_two_references_in_one_input_syncs_and_runs(synced: None, tmp_path: Path) -> None:
    (tmp_path / "wf.yaml").write_text(
        textwrap.dedent(
            """
            workflow:
              slug: two-refs
              nodes:
                - key: connect
                  agent: echo
                  inputs: {dsn: "{{ context.host }}:{{ context.port }}", again: "{{ run.workflow }}/{{ run.workflow }}"}
            """
        )
    )
    call_command("sync_workflows", str(tmp_path), verbosity=0)
    run, _ = trigger_workflow(Workflow.objects.get(slug="two-refs"), context={"host": "db01", "port": 5432})
    assert finish(run).status == RunStatus.SUCCESS, run.error
    assert run.attempts.get().input == {"dsn": "db01:5432", "again": "two-refs/two-refs"}


def test_sync_refuses_a_template_the_renderer_would_refuse_naming_the_node(synced: None, tmp_path: Path) -> None:
    (tmp_path / "wf.yaml").write_text(
        'workflow: {slug: bad-refs, nodes: [{key: connect, agent: echo, inputs: {x: "{{ context.host"}}]}\n'
    )
    with pytest.raises(CommandError, match=r"workflow 'bad-refs': node 'connect': inputs.x: .* never closed"):
        call_command("sync_workflows", str(tmp_path), verbosity=0)
    assert not Workflow.objects.filter(slug="bad-refs").exists()
