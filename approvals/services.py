"""Approval gates: opened by the runner, decided by operators (admin or API), expired by the workers.

Every operator decision goes through ``decide``. It locks the run row first and then the request row (the
runner's lock order), so a decision, a finishing step, an expiry and a cancellation of the same run are
serialised; the first decisive outcome wins and everything after it is told who decided and when. The
run is resumed (or rejected) in the same transaction, and the resumed step is queued only after commit.

Over 400 lines: a gate's whole life (opened, decided, expired, cancelled) shares one lock order and one way of
announcing outcomes, which reads best in one place.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.contrib.auth.models import AbstractUser, AnonymousUser
from django.db import transaction
from django.db.models import Count, Prefetch
from django.utils import timezone

from accounts import permissions
from approvals import events
from approvals.models import ApprovalDecision, ApprovalRequest
from config.jsonsafe import unstorable
from workflows import events as events_port
from workflows import runner
from workflows.models import RunStatus, RunStep, StepStatus, WorkflowRun
from workflows.templating import TemplateError, render_inputs

logger = logging.getLogger("approvals")

DECIDE_PERMISSION = permissions.DECIDE_PERMISSION
EXPIRED_REASON = "approval expired"

User = AbstractUser | AnonymousUser


class ApprovalError(Exception):
    """A decision that was refused; ``status_code`` is what the API answers."""

    status_code = 400

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.details = details


class ReasonRequired(ApprovalError):
    status_code = 422


class InvalidComment(ApprovalError):
    """A comment that cannot be recorded as sent (it holds a NUL character)."""

    status_code = 422


class NotPermitted(ApprovalError):
    status_code = 403


class AlreadyDecided(ApprovalError):
    """The request has its outcome already (decided, expired or cancelled), or this user has voted."""

    status_code = 409


def _fmt(at: datetime | None) -> str:
    return timezone.localtime(at).isoformat(timespec="seconds") if at else "?"


def _username(user: Any) -> str:
    return str(getattr(user, "username", "") or "")


# --- Opening and closing gates (guards of the core's gate_opened and run_closing: the run lock is held) -----


def open_gate(run: WorkflowRun, step: RunStep, node: dict[str, Any], now: datetime) -> ApprovalRequest:
    """Asks for a decision on a step the runner has parked in WAITING_APPROVAL. Caller holds the run lock."""
    gate = node["approval"]
    timeout = gate.get("timeout_seconds")
    request = ApprovalRequest.objects.create(
        run=run,
        step=step,
        node_key=step.key,
        requested_at=now,
        expires_at=now + timedelta(seconds=float(timeout)) if timeout else None,
        required_approvals=int(gate.get("required_approvals") or 1),
        approver_groups=list(gate.get("groups", [])),
        approver_users=list(gate.get("users", [])),
        allow_self_approval=bool(gate.get("allow_self_approval")),
        timeout_action=gate.get("timeout_action") or "reject",
    )
    events.approval_requested(request)
    return request


def _announce(request: ApprovalRequest, outcome: str, approver: str) -> None:
    """Reports the outcome to telemetry once the transaction that recorded it has committed."""
    transaction.on_commit(
        partial(
            events.approval_decided,
            request,
            outcome,
            approver,
            request.channel,
            request.wait_seconds or 0.0,
        )
    )


def cancel_open_requests(run: WorkflowRun) -> int:
    """The run ended before these requests were decided. Caller holds the run lock."""
    now = timezone.now()
    cancelled = 0
    for request in ApprovalRequest.objects.select_for_update().filter(run=run, status=ApprovalRequest.Status.PENDING):
        request.close(ApprovalRequest.Status.CANCELLED, at=now, comment="the run ended before a decision")
        _announce(request, "cancelled", "")
        cancelled += 1
    return cancelled


# --- Who may decide ----------------------------------------------------------------------------------------


def may_decide(user: User | None, request: ApprovalRequest) -> bool:
    """Holds the decide permission and, when the gate names groups or users, is one of them."""
    return decide_refusal(user, request) is None


def decide_refusal(user: User | None, request: ApprovalRequest) -> str | None:
    """Why ``user`` may not decide ``request`` at all, or None."""
    if user is None or not user.is_authenticated or not user.is_active:
        return "you must be signed in to decide approval requests"
    if not user.has_perm(DECIDE_PERMISSION):
        return f"{_username(user)} lacks the permission to decide approval requests ({DECIDE_PERMISSION})"
    groups, users = list(request.approver_groups), list(request.approver_users)
    if groups or users:
        in_users = _username(user) in users
        in_groups = bool(groups) and not _group_names(user).isdisjoint(groups)
        if not (in_users or in_groups):
            allowed = ", ".join([*(f"group {g}" for g in groups), *(f"user {u}" for u in users)])
            return f"only {allowed} may decide the approval of step '{request.node_key}'"
    return None


def _group_names(user: Any) -> frozenset[str]:
    """The user's groups, read once per user object (as Django caches permissions), so that a page asking about
    many requests does not ask the database once per request."""
    cached = getattr(user, "_approver_group_names", None)
    if cached is None:
        cached = frozenset(user.groups.values_list("name", flat=True))
        user._approver_group_names = cached
    return cached


def closed_message(request: ApprovalRequest) -> str:
    """'already decided by X at T' for a request that has its outcome."""
    status = request.status
    if status == ApprovalRequest.Status.EXPIRED:
        return f"approval request {request.pk} expired at {_fmt(request.decided_at)}"
    if status == ApprovalRequest.Status.CANCELLED:
        return f"approval request {request.pk} was cancelled at {_fmt(request.decided_at)} (the run ended)"
    by = _username(request.decided_by) or "?"
    verb = "approved" if status == ApprovalRequest.Status.APPROVED else "rejected"
    return f"approval request {request.pk} was already decided by {by} at {_fmt(request.decided_at)} ({verb})"


def _closed_error(request: ApprovalRequest) -> AlreadyDecided:
    return AlreadyDecided(
        closed_message(request),
        status=request.status,
        decided_by=_username(request.decided_by) or None,
        decided_at=request.decided_at.isoformat() if request.decided_at else None,
    )


# --- Deciding ----------------------------------------------------------------------------------------------


def decide(
    request_obj_or_id: ApprovalRequest | int,
    *,
    acting_user: User,
    decision: str,
    comment: str = "",
    channel: str,
) -> ApprovalDecision:
    """Records one operator's decision and applies the outcome once it is decisive.

    A reject is decisive at once; approvals count toward the gate's quorum (one per user). On the
    decisive approval the step is released (queued after commit) and the run resumes; on a reject the
    run is REJECTED and its remaining steps are cancelled. Raises NotPermitted, AlreadyDecided (with who
    decided and when), ReasonRequired or InvalidComment without any effect, checked in that order: who may
    decide and whether there is anything left to decide come before what the decision says.
    """
    if decision not in ApprovalDecision.Decision.values:
        raise ValueError(f"decision must be approve or reject, not {decision!r}")
    if channel not in ApprovalDecision.Channel.values:
        raise ValueError(f"channel must be admin or api, not {channel!r}")
    comment = (comment or "").strip()
    request_id = request_obj_or_id.pk if isinstance(request_obj_or_id, ApprovalRequest) else int(request_obj_or_id)
    expired: ApprovalRequest | None = None
    with transaction.atomic(durable=True):
        # The run is locked before the request, as the runner does, so the two cannot deadlock.
        run_id = ApprovalRequest.objects.filter(id=request_id).values_list("run_id", flat=True).first()
        if run_id is None:
            raise ApprovalRequest.DoesNotExist(f"approval request {request_id} does not exist")
        run = WorkflowRun.objects.select_for_update().get(id=run_id)
        request = ApprovalRequest.objects.select_for_update().get(id=request_id)
        now = timezone.now()
        refusal = decide_refusal(acting_user, request)
        if refusal:
            _refused(request_id, acting_user, decision, channel, refusal)
            raise NotPermitted(refusal)
        assert not isinstance(acting_user, AnonymousUser)  # decide_refusal turns away anyone not signed in
        if not request.is_open:
            _refused(request_id, acting_user, decision, channel, request.status)
            raise _closed_error(request)
        if request.expires_at is not None and request.expires_at <= now:
            # Past its expiry but not yet swept by maintenance: apply the timeout now, then refuse.
            _expire(run, [request], now)
            expired = request
        else:
            if (
                decision == ApprovalDecision.Decision.APPROVE
                and not request.allow_self_approval
                and run.triggered_by_id is not None
                and run.triggered_by_id == acting_user.pk
            ):
                reason = (
                    f"{_username(acting_user)} triggered this run and may not approve it "
                    f"(self-approval is off for step '{request.node_key}')"
                )
                _refused(request_id, acting_user, decision, channel, reason)
                raise NotPermitted(reason)
            earlier = request.decisions.filter(user_id=acting_user.pk).first()
            if earlier is not None:
                message = (
                    f"{_username(acting_user)} already decided ({earlier.decision}) approval request "
                    f"{request.pk} at {_fmt(earlier.decided_at)}; each operator counts once"
                )
                _refused(request_id, acting_user, decision, channel, message)
                raise AlreadyDecided(message, status=request.status, decided_by=_username(acting_user))
            if decision == ApprovalDecision.Decision.REJECT and not comment:
                _refused(request_id, acting_user, decision, channel, "a reason is required to reject")
                raise ReasonRequired("a reason is required to reject (send it as the comment)")
            problem = unstorable(comment, "comment")
            if problem:
                _refused(request_id, acting_user, decision, channel, problem)
                raise InvalidComment(problem)
            return _record(run, request, acting_user, decision, comment, channel, now)
    assert expired is not None
    _refused(request_id, acting_user, decision, channel, "expired")
    raise _closed_error(expired)


def _record(
    run: WorkflowRun,
    request: ApprovalRequest,
    user: Any,
    decision: str,
    comment: str,
    channel: str,
    now: datetime,
) -> ApprovalDecision:
    row = ApprovalDecision.objects.create(
        request=request,
        user=user,
        decision=decision,
        comment=comment,
        channel=channel,
        decided_at=now,
        wait_seconds=request.waited(now),
    )
    approvals = request.decisions.filter(decision=ApprovalDecision.Decision.APPROVE).count()
    actor = _username(user)
    if decision == ApprovalDecision.Decision.REJECT:
        request.close(ApprovalRequest.Status.REJECTED, at=now, by=user, comment=comment, channel=channel)
        step = RunStep.objects.select_for_update().get(id=request.step_id)
        runner.reject_run(run, f"step '{step.key}' rejected by {actor}: {comment}", actor, now)
        _announce(request, "rejected", actor)
    elif approvals >= request.required_approvals:
        request.close(ApprovalRequest.Status.APPROVED, at=now, by=user, comment=comment, channel=channel)
        step = RunStep.objects.select_for_update().get(id=request.step_id)
        _resume(run, f"step '{step.key}' approved by {actor}", actor)
        runner.release_gate(run, step, now)
        _announce(request, "approved", actor)
    logger.info(
        "%s %s step %s of run %s via %s (%s of %s approvals, request %s)",
        actor,
        "approved" if decision == ApprovalDecision.Decision.APPROVE else "rejected",
        request.node_key,
        run.id,
        channel,
        approvals,
        request.required_approvals,
        request.status,
        extra={
            "event": "approval.decision",
            "approval_id": request.pk,
            "run_id": str(run.id),
            "workflow": run.workflow_slug,
            "step": request.node_key,
            "decision": decision,
            "user": actor,
            "channel": channel,
            "comment": comment,
            "approvals": approvals,
            "required_approvals": request.required_approvals,
            "request_status": request.status,
            "wait_seconds": row.wait_seconds,
        },
    )
    return row


def _resume(run: WorkflowRun, reason: str, actor: str) -> None:
    """The run waited for this gate: it runs again, and its transition says who (or what) let it go.

    ``release_gate`` would move it too, but without knowing who decided. Caller holds the run lock.
    """
    if run.status == RunStatus.WAITING_APPROVAL:
        run.transition(RunStatus.RUNNING, reason=reason, actor=actor)


def _refused(request_id: int, user: Any, decision: str, channel: str, reason: str) -> None:
    logger.warning(
        "%s's %s of approval request %s refused: %s",
        _username(user) or "anonymous",
        decision,
        request_id,
        reason,
        extra={
            "event": "approval.refused",
            "approval_id": request_id,
            "decision": decision,
            "user": _username(user),
            "channel": channel,
            "reason": reason,
        },
    )


# --- Expiry ------------------------------------------------------------------------------------------------


def _expire(
    run: WorkflowRun, requests: list[ApprovalRequest], now: datetime, *, reason: str = "", actor: str = "timeout"
) -> None:
    """Closes the requests as EXPIRED and applies their gates' timeout actions: any "reject" (the default)
    rejects the run, else every gated step is released. Caller holds the run and request locks.

    Without ``reason`` the requests' time ran out; with it they end early because what they were about is
    over ("alert resolved"). Either way the outcome is recorded, announced and logged like a timeout.
    """
    for request in requests:
        why = reason or f"no decision by {_fmt(request.expires_at)}"
        comment = f"{why}; timeout action: {request.timeout_action}"
        request.close(ApprovalRequest.Status.EXPIRED, at=now, comment=comment, channel="timeout")
    rejecting = [request for request in requests if request.timeout_action != "approve"]
    if rejecting:
        named = " and ".join(f"'{request.node_key}'" for request in rejecting)
        steps = f"step {named}" if len(rejecting) == 1 else f"steps {named}"
        if reason:
            runner.reject_run(run, f"{reason}: the approval of {steps} expired undecided", actor, now)
        else:
            verb = "was" if len(rejecting) == 1 else "were"
            runner.reject_run(run, f"{EXPIRED_REASON}: {steps} {verb} not decided in time", actor, now)
    else:
        named = " and ".join(f"'{request.node_key}'" for request in requests)
        _resume(run, f"{reason or 'approval timed out'}: {named} approved by the timeout action", actor)
        for step in RunStep.objects.select_for_update().filter(id__in=[r.step_id for r in requests]).order_by("id"):
            runner.release_gate(run, step, now)
    for request in requests:
        _announce(request, "expired", "")
        logger.info(
            "approval of step %s in run %s expired (%s)%s",
            request.node_key,
            run.id,
            request.timeout_action,
            f": {reason}" if reason else "",
            extra={
                "event": "approval.expired",
                "approval_id": request.pk,
                "run_id": str(run.id),
                "workflow": run.workflow_slug,
                "step": request.node_key,
                "timeout_action": request.timeout_action,
                "reason": reason or "timeout",
                "wait_seconds": request.wait_seconds,
            },
        )


def expire_open_requests(run: WorkflowRun, *, reason: str, actor: str) -> int:
    """Expires the run's pending requests now, because what they were about is over (``reason``); the gates'
    timeout actions then apply as when their time runs out. Returns how many expired.

    Locks the run, then its requests (the runner's order); a run that is no longer waiting is left alone.
    """
    with transaction.atomic():
        locked = WorkflowRun.objects.select_for_update().get(id=run.id)
        pending = list(
            ApprovalRequest.objects.select_for_update()
            .filter(run=locked, status=ApprovalRequest.Status.PENDING)
            .order_by("id")
        )
        if pending:
            _expire(locked, pending, timezone.now(), reason=reason, actor=actor)
    return len(pending)


def expire_requests(limit: int = 100) -> int:
    """Applies the timeout action of every pending request past its expiry.

    Every worker calls this from its maintenance loop. Each request is handled in its own transaction
    under the run and request locks and re-checked there; a run locked by another worker is skipped
    (SKIP LOCKED) and picked up by a later pass, so workers never queue behind each other here.
    """
    now = timezone.now()
    due = list(
        ApprovalRequest.objects.filter(status=ApprovalRequest.Status.PENDING, expires_at__lte=now)
        .order_by("expires_at")
        .values_list("id", "run_id")[:limit]
    )
    expired = 0
    for request_id, run_id in due:
        with transaction.atomic():
            run = WorkflowRun.objects.select_for_update(skip_locked=True).filter(id=run_id).first()
            if run is None:
                continue
            request = ApprovalRequest.objects.select_for_update().get(id=request_id)
            if not request.is_open or request.expires_at is None or request.expires_at > now:
                continue
            _expire(run, [request], now)
            expired += 1
    return expired


# --- What an operator sees before deciding -----------------------------------------------------------------


def upstream_outputs(run: WorkflowRun) -> dict[str, Any]:
    """Outputs of the run's finished steps, by step key."""
    return dict(RunStep.objects.filter(run=run, status=StepStatus.SUCCESS).values_list("key", "output"))


def preview_inputs(request: ApprovalRequest, upstream: dict[str, Any] | None = None) -> tuple[Any, str]:
    """The inputs the gated step will get, rendered as the runner will render them: (inputs, error).

    ``upstream`` (``upstream_outputs`` of the run, read already) saves the query for the outputs the inputs name.
    """
    run = request.run
    try:
        template = run.node(request.node_key).get("inputs", {})
        if upstream is None:
            scope = runner.template_scope(run, template)
        else:
            scope = runner.template_scope(run, {})  # the same scope, with the step outputs given instead of read
            scope["steps"] = {key: {"output": output} for key, output in upstream.items()}
        return render_inputs(template, scope), ""
    except (TemplateError, KeyError) as exc:
        return None, str(exc)


class RunGates(events_port.Gates):
    """The core's ``gates`` slot: a run's approvals as its page shows them."""

    def of_run(self, run: WorkflowRun) -> list[ApprovalRequest]:
        return list(
            ApprovalRequest.objects.filter(run=run)
            .select_related("decided_by")
            .prefetch_related(Prefetch("decisions", queryset=ApprovalDecision.objects.select_related("user")))
            .order_by("requested_at")
        )

    def waiting(self, run_ids: list[Any]) -> dict[Any, int]:
        return dict(
            ApprovalRequest.objects.filter(run_id__in=run_ids, status=ApprovalRequest.Status.PENDING)
            .values("run_id")
            .annotate(n=Count("pk"))
            .order_by()
            .values_list("run_id", "n")
        )
