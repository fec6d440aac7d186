from django.apps import AppConfig


class ApprovalsConfig(AppConfig):
    name = "approvals"

    def ready(self) -> None:
        """Plugs approval gates into the core's port (workflows.events)."""
        from approvals import services
        from workflows import events

        # Guards: inside the run's transaction, under the run lock; an error rolls the step's move back.
        events.gate_opened.connect(services.open_gate)
        events.run_closing.connect(services.cancel_open_requests)
        events.add_maintenance_job("expired_approvals", services.expire_requests)
        events.provide_gates(services.RunGates())
