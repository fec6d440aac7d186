"""The channel on which idle workers are woken as soon as a task is enqueued.

The NOTIFY itself comes from a trigger on the task table (migration 0003_notify_on_task_insert), sent in the
transaction that inserts the task, so it arrives when the task becomes visible; the worker LISTENs on it
(workflows/management/commands/worker.py).
"""

NOTIFY_CHANNEL = "commandcenter_tasks"
