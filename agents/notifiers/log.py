"""The log channel: the notification becomes a structured log event; nothing leaves the service."""

from __future__ import annotations

import logging
from typing import Any

from agents.executors.base import StepContext
from agents.notifiers.base import Channel, Message

logger = logging.getLogger("agents.notifier")


class LogChannel(Channel):
    kind = "log"

    def notify(self, message: Message, ctx: StepContext) -> dict[str, Any]:
        logger.info(
            "notification",
            extra={
                "event": "notification",
                "channel": self.kind,
                "run_id": ctx.run_id,
                "notification": message.summary or message.title,
                "status": message.status,
                "severity": message.severity,
            },
        )
        return {"delivered": True, "message": message.summary or message.title}
