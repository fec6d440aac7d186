from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "API access"

    def ready(self) -> None:
        from accounts import throttle  # noqa: F401 - connects the sign-in signal receivers
        from config import checks  # noqa: F401 - registers the deploy checks
