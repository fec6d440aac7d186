"""What the run page shows, read with a fixed number of queries whatever the run's size: the summary, the
timeline (workflows.timeline), the DAG (workflows.dag), attempts by retry round, the approvals (through the
port's ``gates`` slot), transitions, re-runs, the Grafana links (its ``telemetry`` slot) and the alert records
that started the run. The admin (workflows.admin) renders it, and its live refresh reads the same.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.template.defaultfilters import pluralize
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from agents.models import AgentRun
from workflows import dag, events, timeline
from workflows.display import (
    format_duration,
    format_wait,
    pretty_json,
    status_badge,
    trigger_label,
)
from workflows.models import (
    TERMINAL_RUN_STATUSES,
    RunStatus,
    TriggerSource,
    WorkflowRun,
)


def admin_url(name: str, *args: Any) -> str | None:
    """The admin URL named ``name`` (without the ``admin:`` namespace), or None when that page is not registered."""
    try:
        return reverse(f"admin:{name}", args=args)
    except NoReverseMatch:
        return None


def run_page(run: WorkflowRun, *, operate: bool, now: datetime | None = None) -> dict[str, Any]:
    """Everything the run page shows, read with a fixed number of queries whatever the run's size."""
    now = now or timezone.now()
    links = events.telemetry
    steps = list(run.steps.all())
    attempts = list(AgentRun.objects.filter(run=run).order_by("started_at", "id"))
    approvals = events.gates.of_run(run)
    transitions = list(run.transitions.all())
    nodes = run.definition.get("nodes", [])
    names = {node["key"]: node.get("name") or node["key"] for node in nodes}
    keys = {step.pk: step.key for step in steps}
    line = timeline.build(run, steps, attempts, approvals, transitions, names, now)
    latest: dict[str, AgentRun] = {}
    for attempt in attempts:
        latest[keys.get(attempt.step_id, "?")] = attempt
    attempt_rows: list[dict[str, Any]] = []
    for attempt in attempts:
        key = keys.get(attempt.step_id, "?")
        attempt_rows.append(
            {
                "attempt": attempt,
                "key": key,
                # The step's first attempt carries the anchor that the DAG and the steps table link to.
                "first": all(row["key"] != key for row in attempt_rows),
                "badge": status_badge(attempt.status),
                "duration": format_duration(((attempt.finished_at or now) - attempt.started_at).total_seconds()),
                "input": pretty_json(attempt.input),
                "output": pretty_json(attempt.output) if attempt.output is not None else "",
                "span_url": links.attempt_span_url(run, attempt),
            }
        )
    step_rows = []
    for step in steps:
        drawn = line.line(step.key)
        step_rows.append(
            {
                "step": step,
                "name": names.get(step.key, step.key),
                "badge": status_badge(step.status, step=True),
                "started": drawn.first_start if drawn else None,
                "ran": format_duration(drawn.ran_seconds) if drawn and drawn.attempts else "—",
                "waited": format_duration(drawn.waited_seconds) if drawn and drawn.waited_seconds else "—",
            }
        )
    statuses = {step.key: step.status for step in steps}
    attempts_of = {step.key: step.attempts for step in steps}
    dag_nodes = [
        dag.DagNode(
            key=node["key"],
            name=names[node["key"]],
            depends_on=list(node.get("depends_on", [])),
            gated=bool(node.get("approval", {}).get("required")),
            status=statuses.get(node["key"], ""),
            detail=f"{attempts_of.get(node['key'], 0)} attempt{pluralize(attempts_of.get(node['key'], 0))}",
            href=f"#attempts-{node['key']}" if node["key"] in latest else f"#step-{node['key']}",
            span_url=(events.telemetry.attempt_span_url(run, latest[node["key"]]) or "")
            if node["key"] in latest
            else "",
        )
        for node in nodes
    ]
    terminal = run.status in TERMINAL_RUN_STATUSES
    return {
        "run": run,
        "now": now,
        "live_state": "done" if terminal else "open",
        "status_badge": status_badge(run.status),
        "trigger": trigger_label(run.trigger),
        "times": line,
        "started": line.started,
        "duration": format_duration(line.duration_seconds),
        "queued": format_duration(line.queued_seconds),
        "idle": format_duration(line.idle_seconds) if line.idle_seconds else "",
        "last_round": line.rounds[-1],
        "context_json": pretty_json(run.context),
        "steps": step_rows,
        "attempt_rounds": timeline.rounds_of_attempts(line, attempt_rows),
        "attempts": attempt_rows,
        "approvals": [
            {
                "req": req,
                "badge": status_badge(req.status),
                "wait": format_wait(req.waited(now)),
                "decisions": list(req.decisions.all()),
                "url": admin_url("approvals_approvalrequest_change", req.pk),
            }
            for req in approvals
        ],
        "transitions": [
            {
                "t": t,
                "from_badge": status_badge(t.from_status) if t.from_status else "",
                "to_badge": status_badge(t.to_status),
            }
            for t in transitions
        ],
        "reruns": [
            {"run": r, "badge": status_badge(r.status)}
            for r in run.reruns.only("id", "status", "created_at").order_by("created_at")
        ],
        "timeline": line,
        "dag": dag.render(dag_nodes, label=f"Steps of run {str(run.pk)[:8]} and their dependencies", ident="run-dag"),
        "grafana": links.run_links(run),
        "alerts": alerts_for(run),
        "workflow_url": admin_url("workflows_workflow_change", run.workflow_id),
        "operate": operate,
        "can_cancel": operate and not terminal,
        "can_retry": operate and run.status == RunStatus.FAILED,
        "can_rerun": operate and run.workflow.enabled,
        **{
            f"{action}_url": reverse("admin:workflows_workflowrun_act", args=[run.pk, action])
            for action in ("cancel", "retry", "rerun")
        },
    }


# Who can say where an alert-triggered run came from: filled by the alerts app (AlertsConfig.ready()).
_origin_finders: list[Callable[[WorkflowRun], list[dict[str, str]]]] = []


def add_origin_finder(finder: Callable[[WorkflowRun], list[dict[str, str]]]) -> None:
    """Registers ``finder(run)``, which returns the records that started the run, each as
    ``{"label", "url", "kind"}``, in the order the page shows them."""
    _origin_finders.append(finder)


def alerts_for(run: WorkflowRun) -> list[dict[str, str]]:
    """The alert records that started the run (the alert itself, then the webhook delivery that carried it),
    as the apps that hold them report them; nothing for a run not started by an alert."""
    if run.trigger != TriggerSource.ALERT:
        return []
    return [found for finder in _origin_finders for found in finder(run)]
