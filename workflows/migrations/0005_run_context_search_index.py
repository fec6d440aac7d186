"""A trigram index for the run list's search in the contexts, so that it does not scan every run.

The console searches ``UPPER(context::text) LIKE UPPER('%term%')`` (what Django writes for ``icontains`` on a
cast); a GIN index with ``gin_trgm_ops`` over that expression answers it from the index: with 100,000 runs a
search went from two scans of the table (the count and the page) to a few milliseconds.

PostgreSQL only, and built CONCURRENTLY so that a deployment with many runs keeps writing them meanwhile. The
``pg_trgm`` extension is trusted (PostgreSQL 13+): the database owner may create it. Where it cannot be created
the index is skipped with a notice and the search keeps working, by scanning. The index is invisible to the
model state, as an expression index Django does not manage.
"""

from __future__ import annotations

import sys
from typing import Any

from django.db import DatabaseError, migrations

INDEX = "run_context_search_idx"
CREATE = (
    f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {INDEX} ON workflows_workflowrun "
    "USING gin (UPPER((context)::text) gin_trgm_ops)"
)


def create(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    try:
        schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    except DatabaseError as exc:
        sys.stderr.write(f"  pg_trgm is not available ({exc}); the run search will scan the contexts\n")
        return
    schema_editor.execute(CREATE)


def drop(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}")


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run in a transaction

    dependencies = [("workflows", "0004_runstep_infrastructure_attempts")]

    operations = [migrations.RunPython(create, drop)]
