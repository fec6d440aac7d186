"""Idle workers LISTEN on a channel; a trigger on the task table announces every new task.

The NOTIFY goes out in the transaction that inserts the task row, so it is delivered exactly when the task
becomes visible (at commit), and it costs the application no extra statement. PostgreSQL only: elsewhere
workers poll.
"""

from __future__ import annotations

from typing import Any

from django.db import migrations

# workflows.wakeup.NOTIFY_CHANNEL when this migration was written; a migration keeps its own copy.
NOTIFY_CHANNEL = "commandcenter_tasks"
TABLE = "django_tasks_database_dbtaskresult"

CREATE = f"""
CREATE OR REPLACE FUNCTION commandcenter_notify_task() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{NOTIFY_CHANNEL}', '');
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS commandcenter_notify_task ON {TABLE};
CREATE TRIGGER commandcenter_notify_task AFTER INSERT ON {TABLE}
    FOR EACH STATEMENT EXECUTE FUNCTION commandcenter_notify_task();
"""

DROP = f"""
DROP TRIGGER IF EXISTS commandcenter_notify_task ON {TABLE};
DROP FUNCTION IF EXISTS commandcenter_notify_task();
"""


def create(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def drop(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):
    dependencies = [
        ("workflows", "0002_workflowrun_run_trigger_created_idx"),
        ("django_tasks_database", "0021_conditional_partial_index_ordering"),
    ]

    operations = [migrations.RunPython(create, drop)]
