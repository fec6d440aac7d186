from django.apps import AppConfig


class AlertsConfig(AppConfig):
    name = "alerts"

    def ready(self) -> None:
        from alerts import checks  # noqa: F401 - registers the system checks

        self._plug_in_retention()
        self._plug_in_run_page()

    @staticmethod
    def _plug_in_retention() -> None:
        """The alert webhook's records go with the other old rows in the core's retention pass."""
        from alerts import retention as alert_retention
        from workflows import retention

        retention.add_kinds(alert_retention.KINDS, alert_retention.candidates)

    @staticmethod
    def _plug_in_run_page() -> None:
        """An alert-triggered run's page links the alert and the delivery that started it."""
        from alerts.admin import origins_of
        from workflows import runpage

        runpage.add_origin_finder(origins_of)
