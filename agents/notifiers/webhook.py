"""A generic JSON webhook, signed like Grafana signs its own when a secret is configured.

With ``secret`` (or ``secret_env``) the request carries the Unix time in NOTIFIER_TIMESTAMP_HEADER and the
hex HMAC-SHA256 of ``<timestamp>:<body>`` in NOTIFIER_SIGNATURE_HEADER, so a receiver can check both
the sender and the freshness of each request.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

from django.conf import settings

from agents.executors.base import StepContext
from agents.notifiers.base import Channel, Message


def payload(message: Message) -> dict[str, Any]:
    return {
        "version": "1",
        "title": message.title,
        "headline": message.headline,
        "status": message.status,
        "resolved": message.resolved,
        "severity": message.severity,
        "summary": message.summary,
        "text": message.text,
        "fields": message.fields,
        "links": {link.label.lower(): link.url for link in message.links},
        "run": {"id": message.run_id, "workflow": message.workflow},
        "timestamp": message.timestamp.isoformat(),
    }


def signature(secret: str, timestamp: str, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}:".encode() + body, hashlib.sha256).hexdigest()


class WebhookChannel(Channel):
    """Config: ``url`` or ``url_env``; optional ``secret`` or ``secret_env`` to sign each request."""

    kind = "webhook"
    secret_keys = frozenset({"url", "secret"})
    required = ("url",)

    def notify(self, message: Message, ctx: StepContext) -> dict[str, Any]:
        body = json.dumps(payload(message), ensure_ascii=False, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json"}
        secret = self.setting("secret")
        if secret:
            timestamp = str(int(time.time()))
            headers[settings.NOTIFIER_TIMESTAMP_HEADER] = timestamp
            headers[settings.NOTIFIER_SIGNATURE_HEADER] = signature(secret, timestamp, body)
        response = self.post(self.setting("url"), ctx, content=body, headers=headers)
        return {"delivered": True, "status_code": response.status_code, "signed": bool(secret)}
