"""System checks for the alert webhook's configuration."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Tags, Warning, register


@register(Tags.security)
def webhook_secret_check(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Warns when the alert webhook would accept anyone's alerts in production."""
    if settings.DEBUG or settings.WEBHOOK_TOKEN or settings.WEBHOOK_HMAC_SECRET:
        return []
    return [
        Warning(
            "The alert webhook /webhooks/grafana accepts unauthenticated requests.",
            hint="Set WEBHOOK_TOKEN and/or WEBHOOK_HMAC_SECRET (or their *_FILE variants) and configure "
            "the same in Grafana's webhook contact point. Outside DEBUG the service only starts without them "
            "when WEBHOOK_ALLOW_UNAUTHENTICATED=true says a proxy in front authenticates the sender.",
            id="alerts.W001",
        )
    ]
