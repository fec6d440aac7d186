"""Discord through a channel webhook, as one embed."""

from __future__ import annotations

from typing import Any

from agents.executors.base import StepContext
from agents.notifiers.base import Channel, Message, truncate

# Embed limits: title 256, description 4096, 25 fields (name 256, value 1024), footer 2048, 6000 in all.


def _size(title: str, description: str, fields: list[dict[str, Any]]) -> int:
    return len(title) + len(description) + sum(len(f["name"]) + len(f["value"]) for f in fields) + 100


def embed(message: Message) -> dict[str, Any]:
    description = message.summary
    if message.resolved:
        description = f"Resolved: {message.summary}" if message.summary else "Resolved."
    if message.text and message.text != message.summary:
        description = f"{description}\n\n{message.text}".strip()
    facts = {"Severity": message.severity, "Status": message.status, **message.fields}
    fields = [{"name": truncate(k, 256), "value": truncate(v, 256), "inline": True} for k, v in facts.items() if v]
    fields = fields[:24]
    if message.links:
        links = " · ".join(f"[{link.label}]({link.url})" for link in message.links)
        fields.append({"name": "Links", "value": truncate(links, 1024), "inline": False})
    title = truncate(message.headline, 256)
    description = truncate(description, 2000)
    # The 6000-character budget of a message's embeds: drop label fields (never Links) until it fits.
    while len(fields) > 1 and _size(title, description, fields) > 5800:
        fields.pop(-2 if message.links else -1)
    result: dict[str, Any] = {
        "title": title,
        "description": description,
        "color": message.colour,
        "fields": fields,
        "timestamp": message.timestamp.isoformat(),
        "footer": {"text": f"CommandCenter · {message.workflow}" if message.workflow else "CommandCenter"},
    }
    run_link = next((link.url for link in message.links if link.label == "Run"), "")
    if run_link:
        result["url"] = run_link
    return result


class DiscordChannel(Channel):
    """Config: ``url`` or ``url_env`` (the channel webhook URL, a secret); optional ``username``."""

    kind = "discord"
    secret_keys = frozenset({"url"})
    required = ("url",)

    def notify(self, message: Message, ctx: StepContext) -> dict[str, Any]:
        # No mentions from alert text: "@everyone" in a label must not ping a whole server.
        payload: dict[str, Any] = {"embeds": [embed(message)], "allowed_mentions": {"parse": []}}
        if self.config.get("username"):
            payload["username"] = str(self.config["username"])[:80]
        self.post(self.setting("url"), ctx, json_body=payload)
        return {"delivered": True}
