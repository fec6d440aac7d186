"""Every run traced, over the wire: runserver and a worker export to an OTLP receiver in this process, with the
default sampler (``runs``) and with its ratio of detail spans at 0 and at 1.

A run's trace is what the run page links to: its trigger request's server span, ``workflow.execute`` below it,
an ``agent.execute`` per attempt and an ``approval.wait`` per gate below that. Those arrive for every run,
whatever the ratio and whatever the caller's ``traceparent`` says; the queries and HTTP calls arrive for the
traces the ratio picks by trace id (the lower 64 bits below ratio * 2**64, as ``traceidratio``), so these tests
choose trace ids on either side of the default's bound.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest

from observability.otel import DEFAULT_DETAIL_RATIO
from tests.observability.conftest import Service, Tokens, running_service
from tests.observability.procs import http
from tests.observability.receiver import Receiver, Span

pytestmark = [pytest.mark.slow, pytest.mark.django_db, pytest.mark.timeout(180)]

SERVER, CLIENT = 2, 3  # OTLP span kinds
TRIGGER = "POST api/workflows/<slug>/trigger"
BOUND = round(DEFAULT_DETAIL_RATIO * 2**64)


@pytest.fixture
def own_receiver() -> Iterator[Receiver]:
    """A receiver for one test, so that everything it holds came from that test's processes."""
    server = Receiver().start()
    yield server
    server.stop()


def _traceparent(low: int, *, sampled: bool) -> tuple[str, str]:
    trace_id = f"{secrets.token_hex(8)}{low:016x}"
    return trace_id, f"00-{trace_id}-{secrets.token_hex(8)}-{'01' if sampled else '00'}"


def _approved_run(service: Service, tokens: Tokens) -> dict[str, Any]:
    """A run of ``observed`` (a step that fails once, then a step behind an approval), approved over the API."""
    status, run, _ = http(
        "POST", f"{service.base}/api/workflows/observed/trigger", token=tokens.trigger, body={"context": {}}
    )
    assert status == 202, run

    def pending() -> int | None:
        status, page, _ = http("GET", f"{service.base}/api/approvals?status=PENDING", token=tokens.approver)
        assert status == 200, page
        items = page["items"] if isinstance(page, dict) else page
        return next((item["id"] for item in items if item["run_id"] == run["id"]), None)

    approval = service.receiver.wait_for("the approval request", pending, 30)
    status, decided, _ = http(
        "POST", f"{service.base}/api/approvals/{approval}/approve", token=tokens.approver, body={"comment": "ok"}
    )
    assert status == 200, decided
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status, current, _ = http("GET", f"{service.base}/api/runs/{run['id']}", token=tokens.trigger)
        if current["status"] == "SUCCESS":
            return current
        time.sleep(0.1)
    raise AssertionError(f"run {run['id']} did not succeed: {current}")


def _run_trace(receiver: Receiver, run: dict[str, Any], *, attempts: int, approvals: int = 0) -> list[Span]:
    """Waits for the run's own spans and checks their parentage; returns every span of its trace."""

    def complete() -> list[Span] | None:
        spans = receiver.spans(run["trace_id"])
        names = [s.name for s in spans]
        done = names.count("workflow.execute") == 1 and names.count("agent.execute") == attempts
        return spans if done and names.count("approval.wait") == approvals else None

    spans = receiver.wait_for(f"the spans of run {run['id']}", complete, 20)
    (request,) = [s for s in spans if s.kind == SERVER and s.name == TRIGGER]
    (workflow,) = [s for s in spans if s.name == "workflow.execute"]
    assert workflow.parent_span_id == request.span_id
    assert workflow.attributes["workflow.run.id"] == run["id"]
    below = [s for s in spans if s.name in ("agent.execute", "approval.wait")]
    assert len(below) == attempts + approvals
    assert {s.parent_span_id for s in below} == {workflow.span_id}
    # Whatever was recorded hangs below a span that was recorded too: no holes in the tree.
    ids = {s.span_id for s in spans}
    assert [s.name for s in spans if s.parent_span_id not in ids and s is not request] == []
    return spans


def _queries(spans: list[Span]) -> list[Span]:
    return [s for s in spans if s.kind == CLIENT and s.attributes.get("db.system") == "postgresql"]


def test_with_the_default_sampler_every_run_is_traced_and_a_tenth_of_the_traces_have_their_queries(
    own_receiver: Receiver, committed: Tokens
) -> None:
    with running_service(own_receiver) as service:
        detailed_id, detailed = _traceparent(BOUND - 1, sampled=True)
        # A caller that does not sample: the run is traced all the same, from the server span down.
        plain_id, plain = _traceparent(BOUND, sampled=False)
        runs = [
            service.run(committed.trigger, "quick", traceparent=detailed),
            service.run(committed.trigger, "quick", traceparent=plain),
            service.run(committed.trigger, "quick"),
        ]
        approved = _approved_run(service, committed)
        assert [run["status"] for run in runs] == ["SUCCESS"] * 3
        assert (runs[0]["trace_id"], runs[1]["trace_id"]) == (detailed_id, plain_id)
        traces = [_run_trace(own_receiver, run, attempts=2) for run in runs]
        # observed: prepare, wobble twice (it fails once), ship after the approval.
        traces.append(_run_trace(own_receiver, approved, attempts=4, approvals=1))
        service.stop()

    (request,) = [s for s in traces[0] if s.kind == SERVER]
    attempts = {s.span_id for s in traces[0] if s.name == "agent.execute"}
    assert any(q.parent_span_id == request.span_id for q in _queries(traces[0])), "the trigger's queries"
    assert any(q.parent_span_id in attempts for q in _queries(traces[0])), "the worker's queries"
    assert [s.name for s in traces[1] if s.kind == CLIENT] == []
    # The other two traces got random ids: their queries are there exactly when the ratio picks their id.
    for run, spans in zip([runs[2], approved], traces[2:], strict=True):
        picked = int(run["trace_id"][16:], 16) < BOUND
        assert bool(_queries(spans)) == picked, (run["trace_id"], len(_queries(spans)))


@pytest.mark.parametrize("ratio", ["0", "1"])
def test_at_ratio_0_no_query_is_a_span_and_at_ratio_1_every_one_is(
    ratio: str, own_receiver: Receiver, committed: Tokens
) -> None:
    with running_service(own_receiver, OTEL_TRACES_SAMPLER="runs", OTEL_TRACES_SAMPLER_ARG=ratio) as service:
        runs = [service.run(committed.trigger, "quick") for _ in range(3)]
        assert [run["status"] for run in runs] == ["SUCCESS"] * 3
        traces = [_run_trace(own_receiver, run, attempts=2) for run in runs]
        service.stop()
    for spans in traces:
        (request,) = [s for s in spans if s.kind == SERVER and s.name == TRIGGER]
        attempts = {s.span_id for s in spans if s.name == "agent.execute"}
        queries = _queries(spans)
        if ratio == "0":
            assert [s.name for s in spans if s.kind == CLIENT] == []
        else:
            assert any(q.parent_span_id == request.span_id for q in queries), "the trigger's queries"
            assert {q.parent_span_id for q in queries} >= attempts, "each attempt's queries"
    if ratio == "0":
        assert _queries(own_receiver.spans()) == [], "no query of any trace, polls and worker included"
