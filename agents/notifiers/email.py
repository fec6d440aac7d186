"""Email through Django's default mailer (MAILERS: SMTP in production, locmem in tests), as text plus HTML."""

from __future__ import annotations

import smtplib
from typing import Any

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.template.defaultfilters import linebreaksbr
from django.utils.html import format_html, format_html_join

from agents.executors.base import AgentError, StepContext
from agents.notifiers.base import Channel, Message, truncate

# Refusals that the same message to the same server will meet again.
_PERMANENT = (smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused, smtplib.SMTPAuthenticationError)


def html(message: Message) -> str:
    facts = {"Severity": message.severity, "Status": message.status, **message.fields}
    rows = format_html_join("", "<tr><th align='left'>{}</th><td>{}</td></tr>", ((k, v) for k, v in facts.items() if v))
    links = format_html_join(" · ", "<a href='{}'>{}</a>", ((link.url, link.label) for link in message.links))
    text = linebreaksbr(message.text, autoescape=True) if message.text != message.summary else ""
    resolved = format_html("<p><strong>{}</strong></p>", "This alert is resolved.") if message.resolved else ""
    return format_html(
        "<h2>{}</h2>{}<p>{}</p><p>{}</p><table>{}</table><p>{}</p>",
        message.headline,
        resolved,
        message.summary,
        text,
        rows,
        links,
    )


class EmailChannel(Channel):
    """Config: ``to`` (a list or comma-separated) or ``to_env``; optional ``from`` and ``subject_prefix``."""

    kind = "email"
    required = ("to",)

    def recipients(self) -> list[str]:
        raw = self.config.get("to") or self.setting("to")
        items = raw if isinstance(raw, list) else str(raw).split(",")
        found = [str(item).strip() for item in items if str(item).strip()]
        if not found:
            raise AgentError("email: no recipients configured", permanent=True)
        return found

    def notify(self, message: Message, ctx: StepContext) -> dict[str, Any]:
        prefix = str(self.config.get("subject_prefix", "[CommandCenter] "))
        # A header must be one line: an alert title with a newline would otherwise break the message.
        subject = truncate(" ".join(f"{prefix}{message.headline}".split()), 200)
        recipients = self.recipients()
        email = EmailMultiAlternatives(
            subject=subject,
            body=message.plain_text(),
            from_email=str(self.config.get("from") or settings.DEFAULT_FROM_EMAIL),
            to=recipients,
        )
        email.attach_alternative(html(message), "text/html")
        try:
            email.send()
        except _PERMANENT as exc:
            raise AgentError(f"email: the server refused the message: {exc}", permanent=True) from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise AgentError(f"email: delivery failed: {type(exc).__name__}: {exc}") from exc
        return {"delivered": True, "recipients": len(recipients)}
