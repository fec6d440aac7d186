from typing import Any

from django.apps import AppConfig
from django.core.checks import Error, register


class WorkflowsConfig(AppConfig):
    name = "workflows"

    def ready(self) -> None:
        from workflows import runner, tasks

        register(check_port_listeners)
        tasks.provide_runner(runner.run_step)


def check_port_listeners(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """Every event of the core's port that must be guarded has its guard (see workflows.events)."""
    from workflows import events

    return [
        Error(message, hint="Add the app to INSTALLED_APPS.", id="workflows.E001")
        for message in events.missing_listeners()
    ]
