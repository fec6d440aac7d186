from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from workflows.schema import SCHEMA_PATH, json_schema_text


class Command(BaseCommand):
    help = f"Write the JSON Schema of definition files to {SCHEMA_PATH.name} (--check: fail if it is out of date)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--check", action="store_true", help="Compare instead of writing; exit 1 if they differ.")

    def handle(self, *args: Any, check: bool = False, **options: Any) -> None:
        text = json_schema_text()
        current = SCHEMA_PATH.read_text(encoding="utf-8") if SCHEMA_PATH.exists() else None
        if check:
            if current != text:
                raise CommandError(f"{SCHEMA_PATH} is out of date: run `make schema`")
            self.stdout.write(f"{SCHEMA_PATH} is up to date")
            return
        if current == text:
            self.stdout.write(f"{SCHEMA_PATH} unchanged")
            return
        SCHEMA_PATH.write_text(text, encoding="utf-8")
        self.stdout.write(self.style.SUCCESS(f"wrote {SCHEMA_PATH}"))
