from django.apps import AppConfig


class WorkflowsConfig(AppConfig):
    name = "workflows"

    def ready(self) -> None:
        from workflows import signals  # noqa: F401  (connects the task-queue wake-up)
