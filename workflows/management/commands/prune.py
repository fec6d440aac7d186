from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from workflows.retention import BATCH, prune


class Command(BaseCommand):
    help = (
        "Delete what the retention settings let go, until nothing is left: finished queue rows "
        "(TASK_RESULT_RETENTION_HOURS), alert deliveries and events (ALERT_RETENTION_DAYS) and finished runs "
        "(RUN_RETENTION_DAYS); a setting of 0 keeps that kind. Workers do this on their own every "
        "RETENTION_INTERVAL_SECONDS; this is for cron or a one-off cleanup. Prints the rows deleted per kind."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="Count what would be deleted; delete nothing.")
        parser.add_argument("--batch", type=int, default=BATCH, help="Rows per DELETE (default: %(default)s).")

    def handle(self, *args: Any, dry_run: bool = False, batch: int = BATCH, **options: Any) -> None:
        if batch < 1:
            raise CommandError("--batch must be at least 1")
        counts = prune(batch=batch, dry_run=dry_run, max_batches=None)
        for kind, count in counts.items():
            self.stdout.write(f"{kind}: {count}")
        total = sum(counts.values())
        self.stdout.write(
            self.style.SUCCESS(f"would delete {total} rows (dry run)" if dry_run else f"deleted {total} rows")
        )
