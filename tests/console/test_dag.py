"""The DAG picture (workflows.dag): well-formed SVG, a node per step, an edge per dependency, gates and statuses."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from django.urls import reverse

from workflows import dag
from workflows.models import RunStatus, StepStatus, Workflow

SVG = "{http://www.w3.org/2000/svg}"


def parsed(markup: str) -> ET.Element:
    return ET.fromstring(markup)  # noqa: S314 - our own markup


def nodes_of(svg: ET.Element) -> dict[str, ET.Element]:
    return {g.get("data-step", ""): g for g in svg.iter(f"{SVG}g") if "dag-node" in (g.get("class") or "")}


def test_every_step_is_a_node_and_every_dependency_an_edge_in_columns_by_depth():
    steps = [
        dag.DagNode("root"),
        dag.DagNode("left", depends_on=["root"]),
        dag.DagNode("right", depends_on=["root"]),
        dag.DagNode("join", depends_on=["left", "right"], gated=True),
    ]
    svg = parsed(dag.render(steps, label="graph"))
    assert set(nodes_of(svg)) == {"root", "left", "right", "join"}
    edges = {(p.get("data-from"), p.get("data-to")) for p in svg.iter(f"{SVG}path") if p.get("data-from")}
    assert edges == {("root", "left"), ("root", "right"), ("left", "join"), ("right", "join")}
    at = dag.layout(steps)
    assert at["root"][0] < at["left"][0] == at["right"][0] < at["join"][0]
    assert at["left"][1] != at["right"][1]
    assert "dag-gated" in (nodes_of(svg)["join"].get("class") or "")
    assert "approval gate" in (nodes_of(svg)["join"].findtext(f"{SVG}title") or "")


def test_a_run_node_says_its_status_in_words_and_links_to_its_attempts_and_span():
    node = dag.DagNode(
        "doomed",
        status=StepStatus.FAILED,
        detail="3 attempts",
        href="#attempts-doomed",
        span_url="https://grafana.example.test/explore?x=1&y=2",
    )
    svg = parsed(dag.render([node], label="graph"))
    g = nodes_of(svg)["doomed"]
    assert g.get("data-status") == "FAILED" and "dag-failed" in (g.get("class") or "")
    texts = [t.text for t in g.iter(f"{SVG}text")]
    assert "Failed" in texts and "3 attempts" in texts
    links = {a.get("href"): a.get("aria-label") for a in g.iter(f"{SVG}a")}
    assert links["#attempts-doomed"] == "step doomed, Failed, 3 attempts"
    assert links["https://grafana.example.test/explore?x=1&y=2"] == "Open the span of step doomed in Grafana"


def test_a_step_key_full_of_markup_stays_text():
    svg = dag.render([dag.DagNode('<script>alert("x")</script>')], label="a <b>graph</b>")
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    parsed(svg)


def test_the_run_page_draws_the_runs_steps_with_their_statuses(operator_client, make_run):
    run = make_run(status=RunStatus.FAILED, step_statuses={"doomed": StepStatus.FAILED})
    body = operator_client.get(reverse("admin:workflows_workflowrun_change", args=[run.pk])).content.decode()
    found = re.findall(r'<g class="dag-node dag-(\w+)" data-step="(\w+)" data-status="(\w+)">', body)
    assert found == [("success", "prepare", "SUCCESS"), ("failed", "doomed", "FAILED")]
    assert 'href="#attempts-doomed"' in body and 'id="attempts-doomed"' in body


def test_the_workflow_page_draws_its_definition(operator_client, synced):
    workflow = Workflow.objects.get(slug="scan-approve-notify")
    body = operator_client.get(reverse("admin:workflows_workflow_change", args=[workflow.pk])).content.decode()
    found = re.findall(r'<g class="dag-node dag-definition( dag-gated)?" data-step="(\w+)"', body)
    assert found == [("", "scan"), ("", "summarise"), (" dag-gated", "notify")]
    assert "agent scanner" in body
