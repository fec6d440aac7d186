from django.tasks import task

from workflows import runner


@task()
def execute_step(step_id: int) -> None:
    """Work on one step of a run (and, inline, on the steps that become ready after it)."""
    runner.run_step(step_id)
