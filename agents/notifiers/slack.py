"""Slack through an incoming webhook, as Block Kit blocks (with a plain-text fallback for notifications)."""

from __future__ import annotations

from typing import Any

from agents.executors.base import StepContext
from agents.notifiers.base import Channel, Message, truncate

# Block Kit limits: header text 150, section text 3000, 10 fields of 2000, button text 75, url 3000.
_EMOJI = {"resolved": ":white_check_mark:", "critical": ":red_circle:", "error": ":red_circle:"}


def escape(text: str) -> str:
    """Slack's mrkdwn escaping: &, < and > are control characters there."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def blocks(message: Message) -> list[dict[str, Any]]:
    emoji = _EMOJI.get("resolved" if message.resolved else message.severity, ":large_orange_circle:")
    if not message.status:
        emoji = ":information_source:"
    body = f"*{escape(message.summary)}*" if message.summary else ""
    if message.resolved:
        body = f"*Resolved:* {escape(message.summary)}" if message.summary else "*Resolved.*"
    if message.text and message.text != message.summary:
        body = f"{body}\n{escape(message.text)}".strip()
    facts = {"Severity": message.severity, "Status": message.status, **message.fields}
    fields = [{"type": "mrkdwn", "text": truncate(f"*{escape(k)}*\n{escape(v)}", 2000)} for k, v in facts.items() if v]
    result: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": truncate(f"{emoji} {message.headline}", 150)}},
        {"type": "section", "text": {"type": "mrkdwn", "text": truncate(body or escape(message.headline), 3000)}},
    ]
    if fields:
        result.append({"type": "section", "fields": fields[:10]})
    if message.links:
        buttons = [
            {"type": "button", "text": {"type": "plain_text", "text": truncate(link.label, 75)}, "url": link.url}
            for link in message.links[:25]
            if len(link.url) <= 3000
        ]
        result.append({"type": "actions", "elements": buttons})
    if message.run_id:
        note = f"CommandCenter · {escape(message.workflow)} run {message.run_id}"
        result.append({"type": "context", "elements": [{"type": "mrkdwn", "text": note}]})
    return result


class SlackChannel(Channel):
    """Config: ``url`` or ``url_env`` (the incoming webhook URL, a secret)."""

    kind = "slack"
    secret_keys = frozenset({"url"})
    required = ("url",)

    def notify(self, message: Message, ctx: StepContext) -> dict[str, Any]:
        payload = {"text": truncate(f"{message.headline}: {message.summary}", 3000), "blocks": blocks(message)}
        self.post(self.setting("url"), ctx, json_body=payload)
        return {"delivered": True, "blocks": len(payload["blocks"])}
