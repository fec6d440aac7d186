"""The runner: claims ready steps, executes them under a lease, and moves runs through their DAG.

By responsibility: ``lease`` (worker identity, queueing, claims, leases, shutdown), ``attempt`` (the task's
entry point and the supervision of one attempt), ``settling`` (what a finished, failed or lost attempt, a gate
or an operator's cancel or retry does to the run and its DAG) and ``housekeeping`` (the maintenance pass: the
reaper, the stale-READY sweep, the apps' periodic jobs, retention). This face names what the rest calls.

Our tables are the truth; the task queue only carries "work on step X", at least once. Every claim is a
conditional UPDATE (``status=READY`` -> ``RUNNING``), so a duplicate delivery finds nothing to claim.
Everything that decides what happens next (step finished, failed, lease expired, run cancelled) runs in a
transaction that first locks the run row, so the decisions for one run are serialised across workers.

A worker that finishes a step claims the next ready step of the same run inside that transaction and runs
it directly, so a sequential chain pays no queue latency per step; further ready steps are enqueued for
other workers. An attempt's row is written in the transaction that claims its step (from the queue or inline),
so no step is RUNNING without its attempt and starting one costs no commit of its own. A claimed step holds a
lease that the executing worker renews; the reaper (``reap_expired_leases``) closes attempts whose lease expired
and re-queues or fails the step per its retry policy, and re-enqueues READY steps whose queue message was lost
(``requeue_stale_ready``).

Faults are not failures. An attempt cut short by infrastructure (its worker died or lost the database for
longer than the lease, or handed it back at shutdown) does not count against the node's max_attempts: the step
is put back under a separate budget, RUNNER_INFRASTRUCTURE_RETRIES (``handle_lost_attempt``). A worker whose
database connection dies renews its lease and records its attempt's outcome on a fresh connection, until the
lease would have run out (``through_outage``), so a finished attempt's result survives a database restart.
"""

from workflows.runner.attempt import AgentLookup, execute_claimed, run_step, template_scope
from workflows.runner.housekeeping import maintenance, reap_expired_leases, release_abandoned, requeue_stale_ready
from workflows.runner.lease import (
    CONNECTION_ERRORS,
    WorkerLost,
    claim,
    drop_connection,
    enqueue_step,
    enqueue_with_transaction,
    lease_delta,
    request_shutdown,
    set_worker_id,
    shutdown_requested,
    worker_id,
)
from workflows.runner.settling import (
    advance,
    backoff_delay,
    cancel_run,
    fail_run,
    handle_failure,
    handle_lost_attempt,
    lock_run,
    reject_run,
    release_gate,
    retry_run,
    settle,
)

__all__ = [
    "CONNECTION_ERRORS",
    "AgentLookup",
    "WorkerLost",
    "advance",
    "backoff_delay",
    "cancel_run",
    "claim",
    "drop_connection",
    "enqueue_step",
    "enqueue_with_transaction",
    "execute_claimed",
    "fail_run",
    "handle_failure",
    "handle_lost_attempt",
    "lease_delta",
    "lock_run",
    "maintenance",
    "reap_expired_leases",
    "reject_run",
    "release_abandoned",
    "release_gate",
    "request_shutdown",
    "requeue_stale_ready",
    "retry_run",
    "run_step",
    "set_worker_id",
    "settle",
    "shutdown_requested",
    "template_scope",
    "worker_id",
]
