"""The queue's one task. Queue rows name it by its path (``workflows.tasks.execute_step``), so it stays here.

What it runs is the runner's entry point, plugged in by WorkflowsConfig.ready(): the runner queues this task
and the task runs the runner, and neither module imports the other.
"""

from collections.abc import Callable

from django.tasks import task


def _not_ready(step_id: int) -> None:
    raise RuntimeError(f"step {step_id}: workflows.tasks.execute_step ran before the workflows app was ready")


_run_step: Callable[[int], None] = _not_ready


def provide_runner(run_step: Callable[[int], None]) -> None:
    global _run_step
    _run_step = run_step


@task()
def execute_step(step_id: int) -> None:
    """Work on one step of a run (and, inline, on the steps that become ready after it)."""
    _run_step(step_id)
