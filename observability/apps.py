from django.apps import AppConfig


class ObservabilityConfig(AppConfig):
    name = "observability"

    def ready(self) -> None:
        self._observe_the_core()

    @staticmethod
    def _observe_the_core() -> None:
        """Telemetry observes the core's port and the approvals' events; it never vetoes anything.

        The log line of an event comes before its span and metrics, as each observer runs in order.
        """
        from agents.executors import notifier
        from approvals import events as approval_events
        from observability import hooks, runlog
        from workflows import events

        events.provide_telemetry(hooks.Telemetry())
        events.run_transitioned.observe(runlog.run_transitioned)
        events.run_transitioned.observe(hooks.run_transitioned)
        events.attempt_started.observe(runlog.attempt_started)
        events.attempt_running.observe(hooks.attempt_scope)
        events.attempt_finished.observe(runlog.attempt_finished)
        events.attempt_finished.observe(hooks.attempt_finished)
        events.retry_scheduled.observe(runlog.retry_scheduled)
        events.retry_scheduled.observe(hooks.retry_scheduled)
        events.worker_process.observe(hooks.worker_process)
        approval_events.approval_requested.observe(runlog.approval_requested)
        approval_events.approval_requested.observe(hooks.approval_requested)
        approval_events.approval_decided.observe(runlog.approval_decided)
        approval_events.approval_decided.observe(hooks.approval_decided)
        notifier.provide_trace_link(hooks.trace_url_of_run)
