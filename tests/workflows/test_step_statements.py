"""The statements and transactions of a worker running a noop-3 run (three echo steps in a chain), on PostgreSQL.

Each transaction is a commit, and each statement outside one is a transaction of its own: commits are what a run
costs the database. The claim of a step writes its attempt's row in the same transaction, whether the step came
from the queue or was claimed inline by the transaction that recorded the previous step's outcome; the run goes
from PENDING to RUNNING in a transaction of its own, after the claim (the run's lock is never taken after a
step's). Before: 12 transactions (claim, the step read, the run's start, the agent read, and one INSERT of an
attempt row per step, each on its own), 7 now.
"""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.conftest import work
from workflows.management.commands.worker import Worker
from workflows.models import RunStatus, Workflow
from workflows.services import trigger_workflow


def _statements(captured: CaptureQueriesContext) -> list[str]:
    """Each statement as its verb and the table it names; BEGIN and COMMIT as themselves."""
    shapes = []
    for query in captured.captured_queries:
        sql = query["sql"]
        verb = sql.split(None, 1)[0].upper()
        table = re.search(r'(?:FROM|INTO|UPDATE) "(\w+)"', sql)
        shapes.append(f"{verb} {table.group(1)}" if table else verb)
    return shapes


def _transactions(shapes: list[str]) -> list[list[str]]:
    """The statements grouped by transaction: a BEGIN ... COMMIT block, or one statement in autocommit."""
    grouped: list[list[str]] = []
    block: list[str] | None = None
    for shape in shapes:
        if shape == "BEGIN":
            block = []
        elif shape == "COMMIT":
            assert block is not None
            grouped.append(block)
            block = None
        elif block is not None:
            block.append(shape)
        else:
            grouped.append([shape])
    assert block is None
    return grouped


RECORDED_AND_NEXT_STARTED = [
    "SELECT workflows_workflowrun",  # the run's lock
    "UPDATE workflows_runstep",  # the step's outcome
    "UPDATE agents_agentrun",  # the attempt's outcome
    "SELECT workflows_runstep",  # the run's steps, for the DAG
    "UPDATE workflows_runstep",  # the next step, claimed inline
    "INSERT agents_agentrun",  # its attempt
]

NOOP3 = [
    [  # the queue's task, taken
        "SELECT django_tasks_database_dbtaskresult",
        "UPDATE django_tasks_database_dbtaskresult",
    ],
    [  # the first step claimed, its attempt written
        "UPDATE workflows_runstep",
        "SELECT workflows_runstep",
        "SELECT agents_agent",
        "INSERT agents_agentrun",
    ],
    [  # the run started
        "SELECT workflows_workflowrun",
        "UPDATE workflows_workflowrun",
        "INSERT workflows_runtransition",
    ],
    RECORDED_AND_NEXT_STARTED,
    RECORDED_AND_NEXT_STARTED,
    [  # the last step's outcome, and the run's
        "SELECT workflows_workflowrun",
        "UPDATE workflows_runstep",
        "UPDATE agents_agentrun",
        "SELECT workflows_runstep",
        "UPDATE workflows_workflowrun",
        "INSERT workflows_runtransition",
    ],
    ["UPDATE django_tasks_database_dbtaskresult"],  # the queue's task, done
]


@pytest.mark.django_db(transaction=True)
def test_a_noop3_run_costs_a_worker_seven_transactions(synced: None) -> None:
    workflow = Workflow.objects.get(slug="noop-3")
    trigger_workflow(workflow, context={})
    work()  # the first run in a process also reads content types and the like
    run, _ = trigger_workflow(workflow, context={})
    worker = Worker.draining("test-worker")
    with CaptureQueriesContext(connection) as captured:
        task = worker.next_task()
        assert task is not None
        worker.run_task(task)
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCESS
    # The run started when its first attempt did, although its start is written after the attempt's row.
    assert run.started_at == run.attempts.order_by("started_at").values_list("started_at", flat=True).first()
    transactions = _transactions(_statements(captured))
    assert transactions == NOOP3
    assert len(transactions) == 7
