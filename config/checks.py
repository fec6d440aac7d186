"""Deployment checks of our own, run by `manage.py check --deploy` next to Django's.

Each one flags a setting that is fine on a developer's machine and dangerous in production.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register

_SHELLS = {"sh", "bash", "dash", "zsh", "python", "python3", "perl", "ruby", "node", "env", "sudo"}


@register(Tags.security, deploy=True)
def check_outgoing_guard(app_configs: Any = None, **kwargs: Any) -> list[Warning]:
    if settings.HTTP_ALLOW_PRIVATE_ADDRESSES:
        return [
            Warning(
                "HTTP_ALLOW_PRIVATE_ADDRESSES is on: http and notifier agents may reach every loopback, private "
                "and link-local address (cloud metadata, the database, internal services).",
                hint=(
                    "Unset HTTP_ALLOW_PRIVATE_ADDRESSES in production and list only the private destinations "
                    "agents and notifiers need in HTTP_ALLOWED_PRIVATE_NETWORKS (CIDRs, addresses, host names, "
                    "e.g. 10.20.0.0/16,alerts-relay.internal)."
                ),
                id="commandcenter.W001",
            )
        ]
    return []


@register(Tags.security, deploy=True)
def check_command_allowlist(app_configs: Any = None, **kwargs: Any) -> list[Warning]:
    names = {str(entry).rsplit("/", 1)[-1] for entry in settings.COMMAND_AGENT_ALLOWLIST}
    risky = sorted(names & _SHELLS)
    if risky:
        return [
            Warning(
                f"COMMAND_AGENT_ALLOWLIST allows interpreters that run arbitrary code: {', '.join(risky)}.",
                hint="List the specific programs the command agent needs instead.",
                id="commandcenter.W002",
            )
        ]
    return []


@register(Tags.security, deploy=True)
def check_hosts_and_links(app_configs: Any = None, **kwargs: Any) -> list[Warning]:
    problems = []
    if "*" in settings.ALLOWED_HOSTS:
        problems.append(
            Warning(
                "ALLOWED_HOSTS contains '*': any Host header is accepted, so links built from it can be forged.",
                hint="List the host names the service is reached by.",
                id="commandcenter.W003",
            )
        )
    site = urlparse(settings.SITE_URL)
    if site.scheme == "http" and site.hostname not in ("localhost", "127.0.0.1", "::1"):
        problems.append(
            Warning(
                f"SITE_URL {settings.SITE_URL!r} is plain HTTP: links in notifications lead to an unencrypted page.",
                hint="Set SITE_URL to the https:// address operators use.",
                id="commandcenter.W004",
            )
        )
    return problems


@register(Tags.security, deploy=True)
def check_allowed_hosts(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    if not settings.DEBUG and not settings.ALLOWED_HOSTS:
        return [
            Error(
                "ALLOWED_HOSTS is empty: with DEBUG off every request is refused with 400.",
                hint="Set ALLOWED_HOSTS to the comma-separated host names the service is reached by.",
                id="commandcenter.E001",
            )
        ]
    return []
