from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.urls import reverse

from agents.executors.base import AgentError, Executor, StepContext
from agents.notifiers import CHANNELS, channel_class
from agents.notifiers.base import Link, Message

# Inputs that become links, in the order the message shows them (after the run and its trace).
_LINK_INPUTS = (
    ("dashboard_url", "Dashboard"),
    ("runbook_url", "Runbook"),
    ("silence_url", "Silence"),
    ("source_url", "Source"),
)


def _text(inputs: dict[str, Any], key: str) -> str:
    value = inputs.get(key)
    return "" if value is None else str(value).strip()


def run_url(run_id: str) -> str:
    return settings.SITE_URL + reverse("admin:workflows_workflowrun_change", args=[run_id])


def _no_trace(run_id: str) -> str:
    return ""


# The run's trace in Grafana Explore, by run id ("" without one). Agents know nothing of runs or telemetry:
# telemetry provides this when its app is ready (ObservabilityConfig.ready()).
_trace_url: Callable[[str], str] = _no_trace


def provide_trace_link(trace_url: Callable[[str], str]) -> None:
    global _trace_url
    _trace_url = trace_url


def build_message(inputs: dict[str, Any], ctx: StepContext) -> Message:
    """The message from a step's inputs, with links back to the run and its trace.

    Inputs: ``message`` (required unless ``summary`` or ``title`` is given), ``title``, ``summary``,
    ``status`` (firing/resolved), ``severity``, ``labels`` (an object shown as fields), and the links
    ``dashboard_url``, ``runbook_url``, ``silence_url``, ``source_url``.
    """
    message = _text(inputs, "message")
    summary = _text(inputs, "summary") or message
    title = _text(inputs, "title") or (summary.splitlines()[0] if summary else "")
    if not (message or summary or title):
        raise AgentError("notifier needs a non-empty 'message' input", permanent=True)
    status = _text(inputs, "status").lower()
    if status not in ("", "firing", "resolved"):
        raise AgentError(f"input 'status' must be firing or resolved, not {status!r}", permanent=True)
    labels = inputs.get("labels") or {}
    if not isinstance(labels, dict):
        raise AgentError("input 'labels' must be an object", permanent=True)
    links = [Link("Run", run_url(ctx.run_id))]
    trace = _trace_url(ctx.run_id)
    if trace:
        links.append(Link("Trace", trace))
    links += [Link(label, _text(inputs, key)) for key, label in _LINK_INPUTS if _text(inputs, key)]
    return Message(
        title=title,
        summary=summary,
        text=message,
        status=status,
        severity=_text(inputs, "severity").lower(),
        fields={str(k): str(v) for k, v in labels.items()},
        links=links,
        run_id=ctx.run_id,
        workflow=ctx.workflow,
    )


class NotifierExecutor(Executor):
    """Delivers a message to one channel: ``log``, ``slack``, ``discord``, ``email`` or ``webhook``.

    Config: ``channel`` plus the channel's own keys (see agents/notifiers/); secrets either literally
    (masked in the admin) or, better, as ``<key>_env`` naming an environment variable. ``optional: true``
    skips the delivery (output ``delivered: false`` and why) when such a variable is not set, so a
    workflow can list channels that only some deployments configure. Timeouts and retries of transient
    failures (5xx, 429, network) come from the outgoing-HTTP wrapper; a 4xx answer fails at once.
    """

    type = "notifier"
    secret_keys = frozenset({"url", "secret"})

    @classmethod
    def validate_config(cls, config: dict[str, Any]) -> list[str]:
        channel = config.get("channel", "log")
        if channel not in CHANNELS:
            return [f"channel: {channel!r} is not one of {', '.join(CHANNELS)}"]
        return channel_class(channel).validate_config(config)

    def execute(self, action: str, inputs: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        problems = self.validate_config(self.config)
        if problems:
            raise AgentError("; ".join(problems), permanent=True)
        kind = self.config.get("channel", "log")
        channel = channel_class(kind)(self.config)
        message = build_message(inputs, ctx)
        missing = channel.missing_setting()
        if missing and self.config.get("optional"):
            return {"channel": kind, "delivered": False, "skipped": missing}
        output = channel.notify(message, ctx)
        return {"channel": kind, "status": message.status, **output}
