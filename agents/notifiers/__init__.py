"""Notification channels: one short module per kind on the base in ``base.py``, imported on first use."""

from __future__ import annotations

from functools import cache

from django.utils.module_loading import import_string

from agents.notifiers.base import Channel

CHANNELS: dict[str, str] = {
    "log": "agents.notifiers.log.LogChannel",
    "slack": "agents.notifiers.slack.SlackChannel",
    "discord": "agents.notifiers.discord.DiscordChannel",
    "email": "agents.notifiers.email.EmailChannel",
    "webhook": "agents.notifiers.webhook.WebhookChannel",
}


@cache
def channel_class(kind: str) -> type[Channel]:
    """The Channel class of a kind; KeyError for an unknown kind."""
    return import_string(CHANNELS[kind])  # type: ignore[no-any-return]
