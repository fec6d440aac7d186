from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar


class AgentError(Exception):
    """A step attempt failed. ``permanent`` failures are not retried (retrying cannot help).

    ``retry_after`` (seconds) is how long the remote side asked us to wait: the next attempt comes no sooner.
    """

    def __init__(self, message: str, *, permanent: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.retry_after = retry_after


class StepCancelled(Exception):
    """The attempt was asked to stop: run cancelled, lease lost, timeout or worker shutdown."""


@dataclass
class StepContext:
    """What an executor knows about the attempt it runs."""

    run_id: str
    workflow: str
    step_key: str
    attempt: int
    deadline: float  # time.monotonic() value after which the attempt has timed out
    cancelled: threading.Event = field(default_factory=threading.Event)

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def sleep(self, seconds: float) -> None:
        """Sleeps, waking at once when the attempt is cancelled."""
        if self.cancelled.wait(max(0.0, seconds)):
            raise StepCancelled("attempt cancelled while sleeping")


class Executor:
    """Base of every agent type. Subclasses implement ``execute`` and may validate their config."""

    type: ClassVar[str]
    # Config keys whose values are secrets: masked in the admin and never logged.
    secret_keys: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    @classmethod
    def validate_config(cls, config: dict[str, Any]) -> list[str]:
        """Problems with an agent's config, as messages naming the key; empty when valid."""
        return []

    @classmethod
    def normalise_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        """A valid config as it is stored when definitions are synced (the command agent resolves its program)."""
        return config

    def execute(self, action: str, inputs: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        raise NotImplementedError
