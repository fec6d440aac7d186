from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.models import SCOPES, ApiToken
from accounts.permissions import scope_grants


class Command(BaseCommand):
    help = (
        "Create an API token for a user and print it once (only its hash is stored). The token is read-only "
        "unless --scopes says otherwise; it never may more than its user's permissions allow."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", default="", help="What the token is for.")
        parser.add_argument(
            "--scopes", default="read", help=f"Comma-separated, of: {', '.join(SCOPES)} (default: read)."
        )

    def handle(self, *args: Any, username: str, name: str, scopes: str, **options: Any) -> None:
        try:
            user = get_user_model().objects.get(username=username)
        except get_user_model().DoesNotExist:
            raise CommandError(f"no user named {username!r}") from None
        wanted = tuple(dict.fromkeys(s.strip() for s in scopes.split(",") if s.strip()))
        try:
            token, value = ApiToken.issue(user, name=name, scopes=wanted)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        # The token alone on stdout, so scripts can capture it; what it may do on stderr.
        self.stdout.write(value)
        self.stderr.write(f"Token {token.prefix}… for {username} with scope(s): {', '.join(token.scopes)}.")
        for scope, operations in scope_grants(user, token.scopes).items():
            if operations:
                self.stderr.write(f"  {scope}: may {'; '.join(op.does for op in operations)}")
            else:
                self.stderr.write(
                    f"  {scope}: grants nothing: {username} holds none of the permissions it covers "
                    "(add the user to the operators group, or grant the permissions in the admin)"
                )
