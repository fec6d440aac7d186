from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.models import SCOPES, ApiToken


class Command(BaseCommand):
    help = "Create an API token for a user and print it once (only its hash is stored)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", default="", help="What the token is for.")
        parser.add_argument("--scopes", default=",".join(SCOPES), help=f"Comma-separated, of: {', '.join(SCOPES)}.")

    def handle(self, *args: Any, username: str, name: str, scopes: str, **options: Any) -> None:
        try:
            user = get_user_model().objects.get(username=username)
        except get_user_model().DoesNotExist:
            raise CommandError(f"no user named {username!r}") from None
        try:
            _, value = ApiToken.issue(user, name=name, scopes=tuple(s.strip() for s in scopes.split(",") if s.strip()))
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(value)
