"""What every channel shares: the message, secrets from config or the environment, and HTTP delivery.

A channel's secrets (webhook URLs, signing secrets) come from its agent's config, either literally
(``url``) or, preferably, named by an environment variable (``url_env: SLACK_WEBHOOK_URL``, read with
``*_FILE`` support at delivery time). Secrets never appear in outputs, logs or error messages: a failed
request names the destination's host only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar
from urllib.parse import urlparse

import httpx
from django.conf import settings
from django.utils import timezone

from agents import http
from agents.executors.base import AgentError, StepContext
from config.env import envsecret

SEVERITY_COLOURS = {"critical": 0xD32F2F, "error": 0xD32F2F, "high": 0xE64A19, "warning": 0xF9A825}
RESOLVED_COLOUR = 0x2E7D32
INFO_COLOUR = 0x1976D2


class ChannelUnconfigured(AgentError):
    """A setting the channel needs is missing; retrying cannot help."""

    def __init__(self, message: str) -> None:
        super().__init__(message, permanent=True)


@dataclass
class Link:
    label: str
    url: str


def web_url(url: str) -> bool:
    """Whether ``url`` is an absolute http(s) URL with a host: the only kind a notification makes a link of.

    ``javascript:``, ``data:`` and the like, scheme-relative and relative URLs, and URLs with spaces or control
    characters (which some renderers drop, joining "java" and "script:") are shown as text instead.
    """
    if not url or any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        return False
    parsed = urlparse(url)
    return parsed.scheme in ("http", "https") and bool(parsed.hostname)


@dataclass
class Message:
    """One notification, whatever the channel: a title, what happened, and where to look."""

    title: str
    summary: str = ""
    text: str = ""
    status: str = ""  # "firing" or "resolved" for alerts; empty for other notifications
    severity: str = ""
    fields: dict[str, str] = field(default_factory=dict)
    links: list[Link] = field(default_factory=list)
    run_id: str = ""
    workflow: str = ""
    timestamp: datetime = field(default_factory=timezone.now)

    def __post_init__(self) -> None:
        # Links come from alert annotations and step inputs, i.e. from outside: anything that is not a web URL
        # is kept as a labelled fact, as text, so no channel turns it into something to click.
        shown_as_text = {link.label: link.url for link in self.links if not web_url(link.url)}
        if shown_as_text:
            self.links = [link for link in self.links if web_url(link.url)]
            self.fields = {**self.fields, **shown_as_text}

    @property
    def resolved(self) -> bool:
        return self.status == "resolved"

    @property
    def headline(self) -> str:
        """The title with the alert status in front: "[RESOLVED] DiskFull"."""
        return f"[{self.status.upper()}] {self.title}" if self.status else self.title

    @property
    def colour(self) -> int:
        if self.resolved:
            return RESOLVED_COLOUR
        return SEVERITY_COLOURS.get(self.severity, INFO_COLOUR)

    def plain_text(self) -> str:
        """The message as text (email body, logs, fallbacks)."""
        lines = [self.headline, ""]
        if self.resolved:
            lines.append("This alert is resolved.")
        if self.summary:
            lines.append(self.summary)
        if self.text and self.text != self.summary:
            lines.append(self.text)
        facts = {"Severity": self.severity, "Status": self.status, **self.fields}
        lines += ["", *(f"{k}: {v}" for k, v in facts.items() if v)]
        if self.links:
            lines += ["", *(f"{link.label}: {link.url}" for link in self.links)]
        return "\n".join(lines).strip() + "\n"


def truncate(text: str, limit: int) -> str:
    """At most ``limit`` characters, marked with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Channel:
    """Base of the channels. ``notify`` delivers or raises AgentError (``permanent`` when retrying cannot help)."""

    kind: ClassVar[str]
    # Config keys that hold secrets (each may instead be given as <key>_env naming an environment variable).
    secret_keys: ClassVar[frozenset[str]] = frozenset()
    # Config keys the channel cannot work without.
    required: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    @classmethod
    def validate_config(cls, config: dict[str, Any]) -> list[str]:
        problems = []
        for key in cls.required:
            if not config.get(key) and not config.get(f"{key}_env"):
                problems.append(f"{key}: channel {cls.kind} needs {key} (or {key}_env naming an environment variable)")
        for key in ("timeout_seconds", "retries"):
            value = config.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value < 0):
                problems.append(f"{key}: must be a non-negative number, not {value!r}")
        return problems + http.redirect_problems(config)

    def setting(self, key: str, default: str = "") -> str:
        """``key`` from the config, else the environment variable named by ``<key>_env``."""
        value = self.config.get(key)
        if value:
            return str(value)
        variable = self.config.get(f"{key}_env")
        if variable:
            found = envsecret(str(variable))
            if not found and key in self.required:
                raise ChannelUnconfigured(f"{self.kind}: environment variable {variable} is not set")
            return found or default
        if key in self.required:
            raise ChannelUnconfigured(f"{self.kind}: config needs {key} or {key}_env")
        return default

    def missing_setting(self) -> str:
        """Why a required setting is missing (e.g. its environment variable is not set), or ""."""
        try:
            for key in self.required:
                self.setting(key)
        except ChannelUnconfigured as exc:
            return str(exc)
        return ""

    def notify(self, message: Message, ctx: StepContext) -> dict[str, Any]:
        raise NotImplementedError

    def post(
        self,
        url: str,
        ctx: StepContext,
        *,
        json_body: Any = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """POSTs through the one outgoing-HTTP wrapper; a failure becomes an AgentError naming the host only.

        A URL among the channel's secrets is sent as a secret: errors and telemetry show it redacted. A redirect
        is a failed delivery unless the config's ``max_redirects`` allows following it.
        """
        timeout = float(self.config.get("timeout_seconds") or settings.NOTIFIER_TIMEOUT_SECONDS)
        retries = self.config.get("retries")
        try:
            return http.request(
                "POST",
                url,
                timeout=timeout,
                retries=int(settings.NOTIFIER_RETRIES if retries is None else retries),
                json=json_body,
                content=content,
                headers=headers,
                deadline=ctx.deadline,
                secret="url" in self.secret_keys,
                max_redirects=int(self.config.get("max_redirects", 0)),
            )
        except http.TransportError as exc:
            # Not chained: the underlying exceptions hold the request, and with it the URL.
            raise AgentError(
                f"{self.kind}: delivery failed: {exc}", permanent=exc.permanent, retry_after=exc.retry_after
            ) from None
