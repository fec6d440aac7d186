"""A real Prometheus (Debian's ``prometheus``) evaluates alerting rules and a real Alertmanager (Debian's
``prometheus-alertmanager``) delivers them, with bearer credentials, to a live server of the service with a
worker.

Prometheus scrapes a switchboard served by the test: each rule fires while its switch reads 1, from the
first scrape on, and resolves when the test turns it off. Alertmanager groups by ``team`` with 1 s timings.

- firing -> one alert-notification run, SUCCESS, with the severity, the runbook and the silence URL;
  Alertmanager's repeats are deduplicated;
- a group of three alerts with 66-character names (more than RunTransition.actor holds) -> a run;
- one of two alerts resolving -> the resolution is linked to the firing run, whose approval stays;
- both resolved -> the approval expires ("alert resolved") and the firing run is rejected.

Ports are chosen free; every process is stopped at the end, also when the test fails.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pytest

from alerts.models import AlertDelivery, AlertEvent
from approvals.models import ApprovalRequest
from tests.alerts.live import GATED_WORKFLOW, LIVE_DB, WEBHOOK_TOKEN, LiveService, start_live_service
from tests.observability.procs import Process, free_port, wait_http
from workflows.models import RunStatus, RunTransition, WorkflowRun

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150), LIVE_DB]

PROMETHEUS = "/usr/bin/prometheus"
ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
RUNBOOK = "https://runbooks.example.test/fires-at-once"
LONG_NAMES = [f"CommandCenterOrchestrationServiceHighLatencyOnTheCriticalPathN{i:04d}" for i in range(3)]
T = TypeVar("T")


class Switchboard:
    """Serves ``cc_test_switch{alert="..."} 0|1`` for Prometheus to scrape; the test flips the switches."""

    def __init__(self, **switches: int) -> None:
        self.switches = dict(switches)
        board = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                lines = [f'cc_test_switch{{alert="{name}"}} {value}' for name, value in board.switches.items()]
                body = ("\n".join(lines) + "\n").encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def rule(name: str, expr: str, team: str, **extra: Any) -> dict[str, Any]:
    labels = {"team": team, "severity": extra.pop("severity", "warning"), **extra.pop("labels", {})}
    return {"alert": name, "expr": expr, "for": "0s", "labels": labels, "annotations": extra.pop("annotations", {})}


def binary(path: str, package: str) -> str:
    if not Path(path).exists():
        pytest.fail(f"{path} is missing: install Debian's {package} (scripts/install-test-deps does)")
    return path


@dataclass
class Stack:
    service: LiveService
    switchboard: Switchboard
    prometheus: Process
    alertmanager: Process
    alertmanager_url: str

    def check_alive(self) -> None:
        self.service.check_alive()
        self.prometheus.check_alive()
        self.alertmanager.check_alive()

    def wait(self, what: str, found: Callable[[], T | None], timeout: float = 30.0) -> T:
        """Polls ``found()`` until it returns something; fails naming ``what`` with the processes' logs."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            value = found()
            if value:
                return value
            time.sleep(0.2)
        raise AssertionError(
            f"timed out waiting for {what}\n--- alertmanager:\n{self.alertmanager.output()[-3000:]}"
            f"\n--- worker:\n{self.service.worker.output()[-3000:] if self.service.worker else ''}"
        )


@pytest.fixture
def stack(synced_live: None, committed_workflows: None) -> Iterator[Stack]:
    prometheus_bin = binary(PROMETHEUS, "prometheus")
    alertmanager_bin = binary(ALERTMANAGER, "prometheus-alertmanager")
    workdir = Path(tempfile.mkdtemp(prefix="alertmanager-test-"))
    started: list[Process] = []
    switchboard = Switchboard(notify=1, a=1, b=1, long=1)
    service: LiveService | None = None
    try:
        service = start_live_service(worker=True)
        am_port, prom_port = free_port(), free_port()
        am_url = f"http://127.0.0.1:{am_port}"
        config = {
            "route": {
                "receiver": "commandcenter",
                "group_by": ["team"],
                "group_wait": "1s",
                "group_interval": "1s",
                "repeat_interval": "1s",
            },
            "receivers": [
                {
                    "name": "commandcenter",
                    "webhook_configs": [
                        {
                            "url": f"{service.base}/webhooks/grafana",
                            "send_resolved": True,
                            "http_config": {"authorization": {"credentials": WEBHOOK_TOKEN}},
                        }
                    ],
                }
            ],
        }
        (workdir / "alertmanager.yml").write_text(json.dumps(config))
        alertmanager = Process(
            "alertmanager",
            [
                alertmanager_bin,
                f"--config.file={workdir / 'alertmanager.yml'}",
                f"--storage.path={workdir / 'am-data'}",
                f"--web.listen-address=127.0.0.1:{am_port}",
                f"--web.external-url={am_url}",
                "--cluster.listen-address=",
            ],
            {"PATH": "/usr/bin:/bin"},
        )
        started.append(alertmanager)
        wait_http(f"{am_url}/-/ready", alertmanager)

        rules = [
            rule(
                "CommandCenterFiresAtOnce",
                'cc_test_switch{alert="notify"} == 1',
                "notify",
                severity="critical",
                annotations={"summary": "It fires at once", "runbook_url": RUNBOOK},
            ),
            *(rule(name, 'cc_test_switch{alert="long"} == 1', "longnames") for name in LONG_NAMES),
            *(
                rule(
                    f"CommandCenterGated{x.upper()}",
                    f'cc_test_switch{{alert="{x}"}} == 1',
                    "gate",
                    labels={"workflow": GATED_WORKFLOW},
                )
                for x in ("a", "b")
            ),
        ]
        (workdir / "rules.yml").write_text(json.dumps({"groups": [{"name": "commandcenter", "rules": rules}]}))
        prometheus_config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(workdir / "rules.yml")],
            "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]},
            "scrape_configs": [
                {"job_name": "switchboard", "static_configs": [{"targets": [f"127.0.0.1:{switchboard.port}"]}]}
            ],
        }
        (workdir / "prometheus.yml").write_text(json.dumps(prometheus_config))
        prometheus = Process(
            "prometheus",
            [
                prometheus_bin,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'prom-data'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
                "--rules.alert.resend-delay=1s",
            ],
            {"PATH": "/usr/bin:/bin"},
        )
        started.append(prometheus)
        wait_http(f"http://127.0.0.1:{prom_port}/-/ready", prometheus)
        yield Stack(service, switchboard, prometheus, alertmanager, am_url)
    finally:
        for proc in reversed(started):
            if proc.proc.poll() is None:
                proc.stop()
        if service is not None:
            service.stop()
        switchboard.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def group_deliveries(team: str) -> Any:
    return AlertDelivery.objects.filter(group_key__contains=f'team="{team}"')


def runs_of(team: str) -> list[WorkflowRun]:
    return list(
        WorkflowRun.objects.filter(alert_deliveries__in=group_deliveries(team)).distinct().order_by("created_at")
    )


def test_a_real_alertmanager_drives_runs_dedupe_and_partial_resolution(stack: Stack) -> None:
    started = time.monotonic()

    # Firing: one notifier run, SUCCESS, with severity, runbook and silence URL; repeats deduplicated.
    (notify,) = stack.wait("the firing alert's run", lambda: runs_of("notify"))
    assert notify.workflow.slug == "alert-notification" and notify.trigger == "alert"

    def finished() -> WorkflowRun | None:
        notify.refresh_from_db()
        return notify if notify.status in (RunStatus.SUCCESS, RunStatus.FAILED) else None

    stack.wait("the notifier run to finish", finished)
    assert notify.status == RunStatus.SUCCESS, notify.error
    context = notify.context
    assert context["source"] == "alertmanager" and context["alert_name"] == "CommandCenterFiresAtOnce"
    assert context["severity"] == "critical" and context["runbook_url"] == RUNBOOK
    assert context["silence_url"].startswith(f"{stack.alertmanager_url}/#/silences/new?filter=")
    assert "team%3D%22notify%22" in context["silence_url"]
    log_output = notify.steps.get(key="log").output
    assert log_output is not None and log_output["delivered"] is True
    stack.wait(
        "Alertmanager's repeated notifications",
        lambda: group_deliveries("notify").filter(outcome=AlertDelivery.Outcome.DEDUPLICATED).count() >= 2,
    )
    assert len(runs_of("notify")) == 1

    # Three long names in one group: more than RunTransition.actor holds, and still a run.
    def long_group() -> WorkflowRun | None:
        for run in runs_of("longnames"):
            if all(name in run.context["alert_name"] for name in LONG_NAMES):
                return run
        return None

    long_run = stack.wait("the run of the group of long names", long_group)
    actor = RunTransition.objects.filter(run=long_run).first()
    assert actor is not None and len(actor.actor) == 200 and actor.actor.endswith("…")

    # The gated group: one run waiting for its approval.
    (gated,) = stack.wait("the gated group's run", lambda: runs_of("gate"))
    assert gated.workflow.slug == GATED_WORKFLOW
    assert {e.alertname for e in AlertEvent.objects.filter(runs=gated)} == {
        "CommandCenterGatedA",
        "CommandCenterGatedB",
    }

    def pending() -> ApprovalRequest | None:
        return ApprovalRequest.objects.filter(run=gated, status=ApprovalRequest.Status.PENDING).first()

    request = stack.wait("the gated run's approval request", pending)

    # B resolves, A still fires: Alertmanager sends the group as firing with B resolved.
    stack.switchboard.switches["b"] = 0

    def partial() -> WorkflowRun | None:
        for run in runs_of("gate"):
            if run.id != gated.id and run.context["resolves_run_ids"] == [str(gated.id)]:
                return run
        return None

    partial_run = stack.wait("the partial resolution's run", partial)
    assert partial_run.context["status"] == "firing"
    statuses = {a["labels"]["alertname"]: a["status"] for a in partial_run.context["alerts"]}
    assert statuses == {"CommandCenterGatedA": "firing", "CommandCenterGatedB": "resolved"}
    time.sleep(2)  # a couple more of Alertmanager's notifications: the approval must still stay
    request.refresh_from_db()
    gated.refresh_from_db()
    assert request.status == ApprovalRequest.Status.PENDING
    assert gated.status == RunStatus.WAITING_APPROVAL

    # A resolves too: the approval expires, the firing run is rejected, the resolution links to it.
    stack.switchboard.switches["a"] = 0

    def expired() -> ApprovalRequest | None:
        request.refresh_from_db()
        return request if request.status == ApprovalRequest.Status.EXPIRED else None

    stack.wait("the approval to expire", expired)
    assert request.decision_comment == "alert resolved; timeout action: reject"
    gated.refresh_from_db()
    assert gated.status == RunStatus.REJECTED
    resolved = [r for r in runs_of("gate") if r.context["status"] == "resolved"]
    assert resolved and all(r.context["resolves_run_ids"] == [str(gated.id)] for r in resolved)

    # Every delivery was taken: nothing refused, nothing failed.
    assert not AlertDelivery.objects.exclude(http_status=200).exists()
    assert time.monotonic() - started < 60
