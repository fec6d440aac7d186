from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from workflows.loader import DefinitionError, sync


class Command(BaseCommand):
    help = "Load agent and workflow definitions from YAML files (default: the bundled definitions)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", nargs="?", help="A YAML file or a directory of them.")

    def handle(self, *args: Any, path: str | None = None, **options: Any) -> None:
        target = Path(path) if path else settings.WORKFLOW_DEFINITIONS_DIR
        try:
            report = sync(target)
        except DefinitionError as exc:
            raise CommandError(str(exc)) from exc
        for label, items in (("created", report.created), ("updated", report.updated)):
            for item in items:
                self.stdout.write(f"{label}: {item}")
        self.stdout.write(
            self.style.SUCCESS(
                f"synced {target}: {len(report.created)} created, {len(report.updated)} updated, "
                f"{len(report.unchanged)} unchanged"
            )
        )
