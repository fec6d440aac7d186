from __future__ import annotations

import logging
from typing import Any

from agents.executors.base import AgentError, Executor, StepContext

logger = logging.getLogger("agents.notifier")

CHANNELS = ("log",)


class NotifierExecutor(Executor):
    """Delivers a message to a channel. Config: ``channel``.

    Only the ``log`` channel exists so far: it writes the message as a structured log event and delivers
    nothing outside the service.
    """

    type = "notifier"

    @classmethod
    def validate_config(cls, config: dict[str, Any]) -> list[str]:
        channel = config.get("channel", "log")
        if channel not in CHANNELS:
            return [f"channel: {channel!r} is not one of {', '.join(CHANNELS)}"]
        return []

    def execute(self, action: str, inputs: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        problems = self.validate_config(self.config)
        if problems:
            raise AgentError("; ".join(problems), permanent=True)
        message = str(inputs.get("message", "")).strip()
        if not message:
            raise AgentError("notifier needs a non-empty 'message' input", permanent=True)
        logger.info(
            "notification",
            extra={"event": "notification", "channel": "log", "run_id": ctx.run_id, "notification": message},
        )
        return {"channel": "log", "delivered": True, "message": message}
