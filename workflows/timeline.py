"""The run page's timeline: what each step did and waited for, on an axis that does not lie about time.

Everything the run page says about time comes from ``build``: the run's start and duration in the header,
each step's running and waiting time, and the bars. So the figures agree with each other by construction.

- The run starts when its first attempt started (``WorkflowRun.started_at`` is written a moment later, by the
  transition to RUNNING), and has been queued from its creation until then.
- Retry rounds: a run that failed and was retried by an operator ("Retry failed steps") has a second round,
  which starts at that FAILED -> RUNNING transition. Attempts are grouped by round; the time between the
  failure and the retry is idle, drawn as such and never as retry backoff.
- Bars: a step's wait in the queue (from the moment its dependencies, its round or its approval let it run),
  each attempt, the backoff between attempts of a round, approval waits, and the idle gap before a retry.
- Long waits during which nothing ran (an approval, an idle afternoon, a long backoff) are compressed behind an
  axis break, so that they do not squeeze the attempts into slivers; the bars in them keep their real
  durations in their labels.

Just over 400 lines: the rounds, the segments and the compressed axis depend on one another's arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from workflows.display import format_duration, status_label
from workflows.models import TERMINAL_RUN_STATUSES, RunStatus, RunStep, RunTransition, StepStatus, WorkflowRun

if TYPE_CHECKING:
    from agents.models import AgentRun


class Gate(Protocol):
    """An approval gate's request as the timeline draws it (approvals.models.ApprovalRequest is one)."""

    step_id: int
    status: str
    requested_at: datetime
    decided_at: datetime | None


# A stretch with nothing running is compressed when it lasts at least this long and takes at least this share
# of what is still drawn to scale; each compressed stretch is drawn this wide (percent of the track).
COMPRESS_MIN_SECONDS = 5.0
COMPRESS_MIN_SHARE = 0.25
BREAK_WIDTH = 6.0
MIN_ATTEMPT_WIDTH = 0.4  # percent: an attempt of 1 ms in an hour-long run still shows
MIN_TICK_GAP = 14.0  # percent between axis labels: they never overlap, even on a phone


@dataclass
class Segment:
    """One bar: ``kind`` is attempt, queue, backoff, approval or idle; ``end`` None means it is still going."""

    kind: str
    start: datetime
    end: datetime | None
    label: str
    status: str = ""
    round: int = 1
    step: str = ""
    left: float = 0.0
    width: float = 0.0
    ident: str = ""
    description: str = ""

    def seconds(self, now: datetime) -> float:
        return max(0.0, ((self.end or now) - self.start).total_seconds())

    @property
    def open(self) -> bool:
        return self.end is None


@dataclass
class Round:
    """A pass of the run: the first from its creation, then one per "Retry failed steps"."""

    number: int
    start: datetime
    actor: str = ""
    idle_from: datetime | None = None  # when the previous round failed

    @property
    def idle_seconds(self) -> float:
        return (self.start - self.idle_from).total_seconds() if self.idle_from else 0.0


@dataclass
class StepLine:
    key: str
    name: str
    status: str
    segments: list[Segment] = field(default_factory=list)
    attempts: int = 0
    first_start: datetime | None = None
    ran_seconds: float = 0.0
    waited_seconds: float = 0.0


@dataclass
class Region:
    """A stretch of the axis: drawn to scale, or compressed behind a break."""

    start: datetime
    end: datetime
    left: float
    right: float
    compressed: bool


@dataclass
class Timeline:
    created: datetime
    started: datetime | None  # first attempt (or the recorded start if no attempt row exists)
    finished: datetime | None
    end: datetime  # right edge of the axis: the run's end, or now while it is open
    queued_seconds: float
    duration_seconds: float | None  # started -> finished (or now)
    rounds: list[Round]
    lines: list[StepLine]
    regions: list[Region]
    ticks: list[dict[str, Any]]
    breaks: list[dict[str, Any]]
    attempt_rounds: dict[int, int]  # AgentRun id -> round number

    @property
    def idle_seconds(self) -> float:
        return sum(r.idle_seconds for r in self.rounds)

    def line(self, key: str) -> StepLine | None:
        return next((line for line in self.lines if line.key == key), None)


def run_start(*moments: datetime | None) -> datetime | None:
    """When the run started: the earliest of its recorded start, its steps' claims and its attempts.

    A worker claims the first step, then moves the run to RUNNING (which records ``started_at``), then opens
    the attempt row, milliseconds apart; the claim is when the run started.
    """
    return min([m for m in moments if m is not None], default=None)


def _rounds(run: WorkflowRun, transitions: list[RunTransition]) -> list[Round]:
    rounds = [Round(1, run.created_at)]
    failed_at: datetime | None = None
    for t in sorted(transitions, key=lambda t: (t.at, t.pk or 0)):
        if t.to_status == RunStatus.FAILED:
            failed_at = t.at
        elif t.from_status == RunStatus.FAILED:
            rounds.append(Round(len(rounds) + 1, t.at, actor=t.actor, idle_from=failed_at))
    return rounds


def _round_of(rounds: list[Round], moment: datetime) -> int:
    number = 1
    for r in rounds:
        if r.start <= moment:
            number = r.number
    return number


def build(
    run: WorkflowRun,
    steps: list[RunStep],
    attempts: list[AgentRun],
    approvals: list[Gate],
    transitions: list[RunTransition],
    names: dict[str, str],
    now: datetime,
) -> Timeline:
    """The run's times, rounds and bars, placed on the axis (see the module docstring)."""
    terminal = run.status in TERMINAL_RUN_STATUSES
    rounds = _rounds(run, transitions)
    attempt_rounds = {a.pk: _round_of(rounds, a.started_at) for a in attempts}
    started = run_start(run.started_at, *(step.started_at for step in steps), *(a.started_at for a in attempts))
    finished = run.finished_at if terminal else None
    key_of = {step.pk: step.key for step in steps}
    node_of = {node["key"]: node for node in run.definition.get("nodes", [])}
    own: dict[str, list[AgentRun]] = {step.key: [] for step in steps}
    for a in sorted(attempts, key=lambda a: (a.started_at, a.attempt)):
        own.setdefault(key_of.get(a.step_id, "?"), []).append(a)
    # When each step last succeeded, to tell when its dependants could start.
    succeeded: dict[str, list[datetime]] = {}
    for key, rows in own.items():
        succeeded[key] = sorted(a.finished_at for a in rows if a.status == "SUCCESS" and a.finished_at)
    failures = {r.number: r.idle_from for r in rounds if r.idle_from}

    lines = []
    for step in steps:
        line = StepLine(step.key, names.get(step.key, step.key), step.status)
        deps = node_of.get(step.key, {}).get("depends_on", [])
        gates = [r for r in approvals if r.step_id == step.pk]
        for req in gates:
            line.segments.append(
                Segment(
                    "approval",
                    req.requested_at,
                    req.decided_at,
                    "approval wait" if req.decided_at is None else f"approval {status_label(req.status).lower()}",
                    status=req.status,
                    round=_round_of(rounds, req.requested_at),
                )
            )
        mine = own.get(step.key, [])
        previous: AgentRun | None = None
        for attempt in mine:
            number = attempt_rounds[attempt.pk]
            if previous is None or attempt_rounds[previous.pk] != number:
                failed_at = failures.get(number)
                if previous is not None and failed_at is not None:
                    # A step cancelled by the failure may have closed its attempt a moment after it.
                    idle_from = max(failed_at, previous.finished_at or failed_at)
                    line.segments.append(
                        Segment("idle", idle_from, rounds[number - 1].start, "idle until retried", round=number - 1)
                    )
                ready = _ready_at(rounds[number - 1].start, deps, succeeded, gates, attempt.started_at)
                if attempt.started_at > ready:
                    line.segments.append(Segment("queue", ready, attempt.started_at, "queued", round=number))
            elif previous.finished_at and attempt.started_at > previous.finished_at:
                kind, label = (
                    ("backoff", "retry backoff")
                    if previous.status in ("FAILED", "TIMED_OUT")
                    else ("queue", f"queued again ({status_label(previous.status).lower()} attempt)")
                )
                line.segments.append(Segment(kind, previous.finished_at, attempt.started_at, label, round=number))
            line.segments.append(
                Segment(
                    "attempt",
                    attempt.started_at,
                    attempt.finished_at,
                    f"attempt {attempt.attempt} {status_label(attempt.status).lower()}",
                    status=attempt.status,
                    round=number,
                )
            )
            previous = attempt
        if not terminal and step.status == StepStatus.READY:
            # Waiting now: for its backoff to pass, or in the queue for a worker.
            number = rounds[-1].number
            if previous is not None and previous.finished_at and attempt_rounds[previous.pk] == number:
                kind = "backoff" if previous.status in ("FAILED", "TIMED_OUT") else "queue"
                label = "retry backoff" if kind == "backoff" else "queued again"
                line.segments.append(Segment(kind, previous.finished_at, None, label, round=number))
            else:
                ready = _ready_at(rounds[-1].start, deps, succeeded, gates, now)
                line.segments.append(Segment("queue", ready, None, "queued", round=number))
        line.segments.sort(key=lambda s: s.start)
        line.attempts = len(mine)
        line.first_start = mine[0].started_at if mine else None
        line.ran_seconds = sum(s.seconds(now) for s in line.segments if s.kind == "attempt")
        line.waited_seconds = sum(s.seconds(now) for s in line.segments if s.kind in ("queue", "backoff", "approval"))
        lines.append(line)

    end = max([finished or now, *(s.end or now for line in lines for s in line.segments)])
    regions = _regions(run.created_at, end, [s for line in lines for s in line.segments if s.kind == "attempt"], now)
    for line in lines:
        for index, segment in enumerate(line.segments):
            _place(segment, regions, now, line.key, index)
    return Timeline(
        created=run.created_at,
        started=started,
        finished=finished,
        end=end,
        queued_seconds=((started or finished or now) - run.created_at).total_seconds(),
        duration_seconds=((finished or now) - started).total_seconds() if started else None,
        rounds=rounds,
        lines=lines,
        regions=regions,
        ticks=_ticks(run.created_at, regions),
        breaks=[
            {"left": r.left, "width": r.right - r.left, "label": format_duration((r.end - r.start).total_seconds())}
            for r in regions
            if r.compressed
        ],
        attempt_rounds=attempt_rounds,
    )


def _ready_at(
    round_start: datetime,
    deps: list[str],
    succeeded: dict[str, list[datetime]],
    gates: list[Gate],
    before: datetime,
) -> datetime:
    """When a step could first run in its round: its round began, its dependencies succeeded, its gate opened."""
    moments = [round_start]
    for dep in deps:
        done = [m for m in succeeded.get(dep, []) if m <= before]
        if done:
            moments.append(done[-1])
    moments += [r.decided_at for r in gates if r.decided_at and r.decided_at <= before]
    return min(max(moments), before)


def _regions(origin: datetime, end: datetime, attempts: list[Segment], now: datetime) -> list[Region]:
    """Splits [origin, end] into stretches drawn to scale and long idle ones compressed behind a break."""
    total = max((end - origin).total_seconds(), 0.001)
    busy = sorted((a.start, a.end or now) for a in attempts)
    gaps: list[tuple[datetime, datetime]] = []
    cursor = origin
    for start, finish in busy:
        if start > cursor:
            gaps.append((cursor, start))
        cursor = max(cursor, finish)
    if end > cursor:
        gaps.append((cursor, end))
    # Compress the longest gap while it is long in seconds and large in what is still drawn to scale.
    compressed: list[tuple[datetime, datetime]] = []
    linear = total
    # With no attempt at all there is nothing to make room for: the wait is the whole story.
    for start, finish in sorted(gaps if busy else [], key=lambda g: g[1] - g[0], reverse=True):
        seconds = (finish - start).total_seconds()
        if seconds < COMPRESS_MIN_SECONDS or seconds < COMPRESS_MIN_SHARE * linear:
            break
        compressed.append((start, finish))
        linear -= seconds
    compressed.sort()
    scaled_width = 100.0 - BREAK_WIDTH * len(compressed)
    per_second = scaled_width / max(linear, 0.001)
    regions = []
    cursor, x = origin, 0.0
    for start, finish in [*compressed, (end, end)]:
        if start > cursor:
            width = (start - cursor).total_seconds() * per_second
            regions.append(Region(cursor, start, x, x + width, False))
            x += width
        if finish > start:
            regions.append(Region(start, finish, x, x + BREAK_WIDTH, True))
            x += BREAK_WIDTH
        cursor = finish
    if not regions:
        regions.append(Region(origin, end, 0.0, 100.0, False))
    regions[-1].right = 100.0  # rounding
    return regions


def position(moment: datetime, regions: list[Region]) -> float:
    """Where a moment falls on the track, in percent."""
    for region in regions:
        if moment <= region.end:
            span = (region.end - region.start).total_seconds()
            if span <= 0 or moment <= region.start:
                return region.left
            return min(
                100.0, region.left + (region.right - region.left) * (moment - region.start).total_seconds() / span
            )
    return 100.0


def _place(segment: Segment, regions: list[Region], now: datetime, key: str, index: int) -> None:
    left = position(segment.start, regions)
    right = position(segment.end or now, regions)
    width = right - left
    if segment.kind == "attempt":
        width = max(width, MIN_ATTEMPT_WIDTH)
        left = min(left, 100.0 - width)
    segment.left, segment.width = round(left, 3), round(width, 3)
    segment.step = key
    segment.ident = f"bar-{key}-{index}"
    origin = regions[0].start
    offset = format_duration((segment.start - origin).total_seconds())
    going = ", still going" if segment.open else ""
    segment.description = f"{key}: {segment.label}, {format_duration(segment.seconds(now))}{going}, from +{offset}" + (
        f", round {segment.round}" if segment.round > 1 else ""
    )


def _ticks(origin: datetime, regions: list[Region]) -> list[dict[str, Any]]:
    """Axis labels: the edges of each stretch drawn to scale (and quarters of wide ones), and the length of each
    break in its middle; never closer than MIN_TICK_GAP, a break's label winning over its neighbours."""
    wanted: list[dict[str, Any]] = []
    for region in regions:
        width = region.right - region.left
        if region.compressed:
            label = "≈" + format_duration((region.end - region.start).total_seconds())
            wanted.append({"left": round(region.left + width / 2, 3), "label": label, "major": True, "break": True})
            continue
        wanted.append(_tick(region.left, region.start, origin, major=True))
        if width >= 30:
            for fraction in (0.25, 0.5, 0.75):
                moment = region.start + (region.end - region.start) * fraction
                wanted.append(_tick(region.left + width * fraction, moment, origin, major=False))
    wanted.append(_tick(100.0, regions[-1].end, origin, major=True))
    ticks: list[dict[str, Any]] = []
    for tick in wanted:
        while ticks and tick["left"] - ticks[-1]["left"] < MIN_TICK_GAP:
            if ticks[-1]["break"] or (not tick["break"] and tick["left"] < 100.0) or len(ticks) == 1:
                break
            ticks.pop()
        if ticks and tick["left"] - ticks[-1]["left"] < MIN_TICK_GAP:
            continue
        ticks.append(tick)
    return ticks


def _tick(left: float, moment: datetime, origin: datetime, *, major: bool) -> dict[str, Any]:
    seconds = (moment - origin).total_seconds()
    return {
        "left": round(left, 3),
        "label": "0" if seconds <= 0 else "+" + format_duration(seconds),
        "major": major,
        "break": False,
    }


def rounds_of_attempts(timeline: Timeline, attempts: list[Any]) -> list[dict[str, Any]]:
    """The attempt rows grouped by retry round, each round with what started it."""
    grouped = []
    for r in timeline.rounds:
        rows = [a for a in attempts if timeline.attempt_rounds.get(a["attempt"].pk) == r.number]
        if rows or r.number > 1:
            grouped.append({"round": r, "attempts": rows, "idle": format_duration(r.idle_seconds)})
    return grouped
