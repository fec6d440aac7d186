"""The run page's timeline (workflows.timeline), from rows built in memory: what is drawn, where, and called what."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from agents.models import AgentRun
from approvals.models import ApprovalRequest
from workflows import timeline
from workflows.models import RunStatus, RunStep, RunTransition, WorkflowRun

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
NODES = [
    {"key": "prepare", "depends_on": []},
    {"key": "doomed", "depends_on": ["prepare"]},
]


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def run_of(status: str, *, started: float | None, finished: float | None, nodes: list[dict[str, Any]] = NODES):
    return WorkflowRun(
        status=status,
        definition={"slug": "demo", "nodes": nodes},
        created_at=T0,
        started_at=at(started) if started is not None else None,
        finished_at=at(finished) if finished is not None else None,
    )


def step(pk: int, key: str, status: str, attempts: int = 1) -> RunStep:
    return RunStep(pk=pk, key=key, status=status, attempts=attempts)


def attempt(pk: int, step_id: int, number: int, status: str, start: float, end: float | None) -> AgentRun:
    return AgentRun(
        pk=pk,
        step_id=step_id,
        attempt=number,
        status=status,
        started_at=at(start),
        finished_at=at(end) if end is not None else None,
    )


def moved(pk: int, before: str, after: str, when: float, actor: str = "") -> RunTransition:
    return RunTransition(pk=pk, from_status=before, to_status=after, at=at(when), actor=actor)


def manually_retried() -> timeline.Timeline:
    """prepare succeeds; doomed fails three times 0.5 s and 1 s apart; the run fails at +1.63 s and sits idle
    for ten minutes until olivia retries it; doomed fails three more times."""
    run = run_of(RunStatus.FAILED, started=0.031, finished=601.73)
    steps = [step(1, "prepare", "SUCCESS"), step(2, "doomed", "FAILED", 6)]
    attempts = [
        attempt(10, 1, 1, "SUCCESS", 0.020, 0.052),
        attempt(11, 2, 1, "FAILED", 0.060, 0.080),
        attempt(12, 2, 2, "FAILED", 0.580, 0.600),
        attempt(13, 2, 3, "FAILED", 1.610, 1.630),
        attempt(14, 2, 4, "FAILED", 600.040, 600.060),
        attempt(15, 2, 5, "FAILED", 600.570, 600.590),
        attempt(16, 2, 6, "FAILED", 601.610, 601.730),
    ]
    transitions = [
        moved(1, "", RunStatus.PENDING, 0),
        moved(2, RunStatus.PENDING, RunStatus.RUNNING, 0.031),
        moved(3, RunStatus.RUNNING, RunStatus.FAILED, 1.630),
        moved(4, RunStatus.FAILED, RunStatus.RUNNING, 600.0, actor="olivia"),
        moved(5, RunStatus.RUNNING, RunStatus.FAILED, 601.730),
    ]
    return timeline.build(run, steps, attempts, [], transitions, {}, at(700))


def kinds(line: timeline.StepLine) -> list[str]:
    return [s.kind for s in line.segments]


def test_a_manual_retry_is_an_idle_gap_not_backoff_and_starts_a_second_round():
    drawn = manually_retried()
    doomed = drawn.line("doomed")
    assert doomed is not None
    assert kinds(doomed) == [
        "queue",
        "attempt",
        "backoff",
        "attempt",
        "backoff",
        "attempt",
        "idle",
        "queue",  # from the retry until a worker took the step
        "attempt",
        "backoff",
        "attempt",
        "backoff",
        "attempt",
    ]
    idle = doomed.segments[6]
    assert (idle.start, idle.end) == (at(1.630), at(600.0))
    assert [r.number for r in drawn.rounds] == [1, 2]
    assert drawn.rounds[1].actor == "olivia"
    assert round(drawn.rounds[1].idle_seconds, 2) == 598.37
    assert [drawn.attempt_rounds[pk] for pk in range(10, 17)] == [1, 1, 1, 1, 2, 2, 2]
    assert [s.round for s in doomed.segments if s.kind == "attempt"] == [1, 1, 1, 2, 2, 2]
    assert (doomed.segments[7].start, doomed.segments[7].end) == (at(600.0), at(600.040))


def test_the_idle_gap_is_compressed_behind_a_break_so_the_attempts_keep_their_room():
    drawn = manually_retried()
    doomed = drawn.line("doomed")
    assert doomed is not None
    (gap,) = drawn.breaks
    idle = next(s for s in doomed.segments if s.kind == "idle")
    assert idle.width <= timeline.BREAK_WIDTH + 0.01  # ten minutes drawn as a break, not 99 % of the track
    assert gap["label"] == "9m 58s"
    assert any(t["break"] and t["label"] == "≈9m 58s" for t in drawn.ticks)
    attempts = [s for s in doomed.segments if s.kind == "attempt"]
    # The two rounds share what the break leaves: the attempts are spread over it, in order, not crushed.
    assert attempts[0].left < 5 and attempts[-1].left + attempts[-1].width > 95
    lefts = [a.left for a in attempts]
    assert lefts == sorted(lefts)
    backoff = doomed.segments[2]
    assert backoff.width > 10  # 0.5 s of a 3.3 s drawn-to-scale axis


def test_header_steps_and_bars_are_measured_from_one_start():
    # started_at is written by the transition to RUNNING, 11 ms after the first attempt began.
    run = run_of(RunStatus.SUCCESS, started=0.041, finished=0.206, nodes=[{"key": "only", "depends_on": []}])
    steps = [step(1, "only", "SUCCESS")]
    attempts = [attempt(10, 1, 1, "SUCCESS", 0.030, 0.205)]
    drawn = timeline.build(run, steps, attempts, [], [], {}, at(1))
    assert drawn.started == at(0.030)
    assert drawn.queued_seconds == 0.030
    assert round(drawn.duration_seconds or 0, 3) == 0.176
    only = drawn.line("only")
    assert only is not None
    assert round(only.ran_seconds, 3) == 0.175
    assert round(only.waited_seconds, 3) == 0.030
    assert kinds(only) == ["queue", "attempt"]


def test_an_approval_wait_is_drawn_as_one_then_the_queue_after_the_decision():
    nodes = [{"key": "scan", "depends_on": []}, {"key": "notify", "depends_on": ["scan"]}]
    run = run_of(RunStatus.SUCCESS, started=0.01, finished=42.2, nodes=nodes)
    steps = [step(1, "scan", "SUCCESS"), step(2, "notify", "SUCCESS")]
    attempts = [attempt(10, 1, 1, "SUCCESS", 0.01, 0.1), attempt(11, 2, 1, "SUCCESS", 42.1, 42.2)]
    gate = ApprovalRequest(pk=5, step_id=2, status="APPROVED", requested_at=at(0.1), decided_at=at(42.0))
    drawn = timeline.build(run, steps, attempts, [gate], [], {}, at(50))
    notify = drawn.line("notify")
    assert notify is not None
    assert kinds(notify) == ["approval", "queue", "attempt"]
    assert notify.segments[0].label == "approval approved"
    assert (notify.segments[1].start, notify.segments[1].end) == (at(42.0), at(42.1))
    # Nothing ran from the end of scan to the start of notify: that stretch is the break.
    assert len(drawn.breaks) == 1 and drawn.breaks[0]["label"] == "42.0 s"
    assert "notify: approval approved, 41.9 s, from +100 ms" in notify.segments[0].description


def test_an_open_run_draws_what_is_still_going_up_to_now():
    run = run_of(RunStatus.RUNNING, started=0.01, finished=None)
    steps = [step(1, "prepare", "SUCCESS"), step(2, "doomed", "READY")]
    attempts = [attempt(10, 1, 1, "SUCCESS", 0.01, 0.05), attempt(11, 2, 1, "FAILED", 0.06, 0.08)]
    drawn = timeline.build(run, steps, attempts, [], [], {}, at(0.5))
    doomed = drawn.line("doomed")
    assert doomed is not None
    assert kinds(doomed) == ["queue", "attempt", "backoff"]
    assert doomed.segments[-1].open and "still going" in doomed.segments[-1].description
    assert drawn.end == at(0.5) and drawn.finished is None
    assert round(drawn.duration_seconds or 0, 2) == 0.49


intervals = st.lists(
    st.tuples(st.floats(0, 5000, allow_nan=False), st.floats(0.001, 3000, allow_nan=False)), min_size=1, max_size=12
)


@settings(max_examples=200, deadline=None)
@given(intervals, st.floats(0, 9000, allow_nan=False))
def test_positions_keep_time_in_order_and_labels_never_crowd(spans, extra):
    """Invariants of the axis for any set of attempts: moments map into [0, 100] in order, every break is a
    stretch with no attempt in it, and no two axis labels are closer than MIN_TICK_GAP."""
    segments = [timeline.Segment("attempt", at(s), at(s + d), "a") for s, d in spans]
    end = max(s.end for s in segments if s.end) + timedelta(seconds=extra)
    regions = timeline._regions(T0, end, segments, end)
    moments = sorted({T0, end, *(s.start for s in segments), *(s.end for s in segments if s.end)})
    placed = [timeline.position(m, regions) for m in moments]
    assert placed == sorted(placed)
    assert placed[0] >= 0 and placed[-1] <= 100.0
    for region in regions:
        if region.compressed:
            assert all(s.end and (s.end <= region.start or s.start >= region.end) for s in segments)
    ticks = timeline._ticks(T0, regions)
    lefts = [t["left"] for t in ticks]
    assert lefts == sorted(lefts)
    assert all(b - a >= timeline.MIN_TICK_GAP for a, b in itertools.pairwise(lefts))
