"""Typed readers for settings taken from the environment.

Each helper raises ImproperlyConfigured with the variable's name when the value makes no sense, so a
misconfigured deployment stops at start-up with a message instead of misbehaving later. ``*_FILE``
variants are honoured for secrets (Docker and Kubernetes secrets are mounted as files).
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from urllib.parse import urlparse

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def envstr(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def envsecret(name: str, default: str = "") -> str:
    """Reads NAME, or the contents of the file named by NAME_FILE."""
    path = os.environ.get(f"{name}_FILE")
    if path:
        try:
            with open(path, encoding="utf-8") as fh:
                return fh.read().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE={path!r} cannot be read: {exc.strerror}") from exc
    return os.environ.get(name, default)


def envbool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use one of 1/0, true/false, yes/no, on/off)")


def envint(name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} is below the minimum of {minimum}")
    if maximum is not None and value > maximum:
        raise ImproperlyConfigured(f"{name}={value} is above the maximum of {maximum}")
    return value


def envfloat(name: str, default: float, *, minimum: float | None = None) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ImproperlyConfigured(f"{name}={raw!r} is not a finite number")
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} is below the minimum of {minimum}")
    return value


def envlist(name: str, default: list[str] | None = None) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return list(default or [])
    return [item.strip() for item in raw.split(",") if item.strip()]


def envchoice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = os.environ.get(name, default).strip().lower()
    if value not in choices:
        raise ImproperlyConfigured(f"{name}={value!r} must be one of: {', '.join(choices)}")
    return value


def envurl(name: str, default: str = "") -> str:
    """An http(s) URL without a trailing slash, or empty when unset."""
    raw = os.environ.get(name, default).strip()
    if not raw:
        return ""
    parsed = urlparse(raw)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an http(s) URL")
    return raw.rstrip("/")


# A DNS host name: dot-separated labels of letters, digits, hyphens (and underscores, as container names have),
# the last one not all digits (so "127.1" or "2130706433" is never taken for a name).
_HOST_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOST_NAME = re.compile(rf"(?=.{{1,253}}$)(?:{_HOST_LABEL}\.)*(?!\d+$){_HOST_LABEL}")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class PrivateAllowlist:
    """Private destinations that outgoing requests may reach: networks (CIDRs, or single addresses) and host names."""

    networks: tuple[Network, ...] = ()
    hosts: frozenset[str] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.networks or self.hosts)


def parse_allowlist(name: str, raw: str) -> PrivateAllowlist:
    """Comma-separated CIDRs (``10.20.0.0/16``), addresses (``10.20.0.7``, ``[fd12::7]``) and host names
    (``alerts.internal``); anything else raises ImproperlyConfigured naming ``name`` and the item."""
    networks: list[Network] = []
    hosts: set[str] = set()
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        candidate = item[1:-1] if item.startswith("[") and item.endswith("]") else item
        if "%" not in candidate:  # an IPv6 zone (fe80::1%eth0) says nothing about where a request may go
            try:
                networks.append(ipaddress.ip_network(candidate))
                continue
            except ValueError:
                pass
            try:
                loose = ipaddress.ip_network(candidate, strict=False)
            except ValueError:
                pass
            else:
                raise ImproperlyConfigured(f"{name}: {item!r} has host bits set (did you mean {loose}?)")
        host = item.lower().rstrip(".")
        if not _HOST_NAME.fullmatch(host):
            raise ImproperlyConfigured(
                f"{name}: {item!r} is neither an IP network (such as 10.20.0.0/16 or 10.20.0.7) nor a host name"
            )
        hosts.add(host)
    return PrivateAllowlist(networks=tuple(networks), hosts=frozenset(hosts))


def envallowlist(name: str) -> PrivateAllowlist:
    return parse_allowlist(name, os.environ.get(name, ""))
