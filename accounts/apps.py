from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "API access"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from accounts.roles import ensure_roles

        # After every app's migrations (and their permissions) exist.
        post_migrate.connect(ensure_roles, dispatch_uid="accounts.ensure_roles")
        from accounts import throttle  # noqa: F401 - connects the sign-in signal receivers
