"""The operator console: sign-in throttled per username and address, CSRF required on every POST."""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import User
from django.contrib.auth.signals import user_login_failed
from django.db import connection
from django.test import Client, override_settings
from django.urls import URLPattern, URLResolver

from accounts.models import ThrottleCounter

pytestmark = pytest.mark.django_db

LOGIN = "/admin/login/?next=/admin/"


def sign_in(client: Client, username: str, password: str, address: str = "203.0.113.7") -> Any:
    return client.post(LOGIN, {"username": username, "password": password}, REMOTE_ADDR=address)


@override_settings(ADMIN_LOGIN_MAX_FAILURES=3, ADMIN_LOGIN_WINDOW_SECONDS=600)
def test_sign_in_is_refused_after_repeated_failures_even_with_the_right_password(operator: User) -> None:
    client = Client()
    for _ in range(3):
        response = sign_in(client, "olivia", "wrong")
        assert response.status_code == 200  # the form again, with Django's error
    response = sign_in(client, "olivia", "operator-pass-1")
    assert response.status_code == 429
    body = response.content.decode()
    assert "Too many failed sign-in attempts" in body and "Try again in 10 minutes" in body
    assert int(response["Retry-After"]) > 500
    assert "_auth_user_id" not in client.session
    # The limit is per username: another address does not lift it (a guesser spreads over many addresses) ...
    assert sign_in(Client(), "olivia", "operator-pass-1", address="198.51.100.1").status_code == 429
    # ... and another username from the same address is not affected.
    assert sign_in(Client(), "victor", "nope").status_code == 200


@override_settings(ADMIN_LOGIN_MAX_FAILURES=3, ADMIN_LOGIN_WINDOW_SECONDS=600)
def test_the_username_is_matched_without_regard_to_case(operator: User) -> None:
    for name in ("olivia", "OLIVIA", "Olivia"):
        sign_in(Client(), name, "wrong")
    assert sign_in(Client(), "olivia", "operator-pass-1").status_code == 429


@override_settings(ADMIN_LOGIN_MAX_FAILURES=3, ADMIN_LOGIN_WINDOW_SECONDS=600)
def test_a_successful_sign_in_clears_the_failures(operator: User) -> None:
    for _ in range(2):
        sign_in(Client(), "olivia", "wrong")
    assert sign_in(Client(), "olivia", "operator-pass-1").status_code == 302
    assert not ThrottleCounter.objects.filter(key="sign-in-user:olivia").exists()
    assert ThrottleCounter.objects.get(key="sign-in-address:203.0.113.7").count == 2  # the failures, not the success
    for _ in range(2):
        sign_in(Client(), "olivia", "wrong")
    assert sign_in(Client(), "olivia", "operator-pass-1").status_code == 302


@override_settings(ADMIN_LOGIN_MAX_FAILURES=2, ADMIN_LOGIN_WINDOW_SECONDS=60)
def test_failures_outside_the_window_do_not_count(operator: User) -> None:
    for _ in range(2):
        sign_in(Client(), "olivia", "wrong")
    ThrottleCounter.objects.update(window_ends=time.time() - 1)
    assert sign_in(Client(), "olivia", "operator-pass-1").status_code == 302


FAST_HASHES = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # the throttle, not the hash, is under test


@override_settings(ADMIN_LOGIN_MAX_FAILURES_PER_ADDRESS=4, ADMIN_LOGIN_WINDOW_SECONDS=600, PASSWORD_HASHERS=FAST_HASHES)
def test_many_usernames_from_one_address_are_limited_per_address() -> None:
    User.objects.create_user("uma", password="uma-pass-1", is_staff=True)
    for i in range(4):
        assert sign_in(Client(), f"guess-{i}", "wrong").status_code == 200
    response = sign_in(Client(), "uma", "uma-pass-1")
    assert response.status_code == 429 and "from your address" in response.content.decode()
    assert sign_in(Client(), "uma", "uma-pass-1", address="198.51.100.9").status_code == 302


class CheckedPasswords:
    """Counts the sign-in attempts whose password was actually checked (and failed)."""

    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()

    def __call__(self, **kwargs: Any) -> None:
        with self.lock:
            self.count += 1


def parallel_sign_ins(attempts: list[tuple[str, str, str]], workers: int) -> tuple[int, list[int]]:
    """Sends (username, password, address) sign-ins from ``workers`` threads at once; returns how many
    passwords were checked and the statuses."""
    checked = CheckedPasswords()
    user_login_failed.connect(checked, dispatch_uid="checked-passwords")

    def one(attempt: tuple[str, str, str]) -> int:
        try:
            return int(sign_in(Client(), *attempt).status_code)
        finally:
            connection.close()

    try:
        with ThreadPoolExecutor(workers) as pool:
            statuses = list(pool.map(one, attempts))
    finally:
        user_login_failed.disconnect(dispatch_uid="checked-passwords")
    return checked.count, statuses


@pytest.mark.django_db(transaction=True)  # each thread signs in over its own connection to PostgreSQL
@override_settings(
    ADMIN_LOGIN_MAX_FAILURES=5,
    ADMIN_LOGIN_MAX_FAILURES_PER_ADDRESS=20,
    ADMIN_LOGIN_WINDOW_SECONDS=600,
    PASSWORD_HASHERS=FAST_HASHES,
)
def test_parallel_guesses_check_no_more_passwords_than_the_limits() -> None:
    names = ["target", *(f"user-{i}" for i in range(60))]
    User.objects.bulk_create(User(username=name, password=make_password("right")) for name in names)
    # 40 wrong passwords for one user at once: the per-username limit holds exactly.
    checked, statuses = parallel_sign_ins([("target", f"wrong-{i}", "203.0.113.7") for i in range(40)], workers=16)
    assert checked == 5
    assert sorted(statuses) == [200] * 5 + [429] * 35
    # 60 usernames x 4 passwords from one address at once: the per-address limit holds exactly.
    guesses = [(f"user-{i}", f"guess-{n}", "198.51.100.77") for n in range(4) for i in range(60)]
    checked, statuses = parallel_sign_ins(guesses, workers=12)
    assert checked == 20
    assert statuses.count(429) == 220


def test_the_sign_in_form_itself_requires_a_csrf_token(operator: User) -> None:
    client = Client(enforce_csrf_checks=True)
    response = client.post(LOGIN, {"username": "olivia", "password": "operator-pass-1"})
    assert response.status_code == 403


def admin_post_paths() -> list[str]:
    """Every admin URL, with placeholder values for its parameters."""
    paths: list[str] = []

    def walk(patterns: list[Any], prefix: str) -> None:
        for pattern in patterns:
            route = str(pattern.pattern)
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, prefix + route)
            elif isinstance(pattern, URLPattern):
                paths.append(prefix + route)

    walk(admin.site.get_urls(), "/admin/")
    out = []
    for route in paths:
        route = route.lstrip("^").rstrip("$").replace("\\Z", "")
        route = re.sub(r"<(?:(\w+):)?(\w+)>", lambda m: "1" if m.group(1) == "int" else "x1", route)
        route = re.sub(r"\(\?P<\w+>[^)]*\)", "x1", route)
        if "(" in route or "[" in route:
            continue
        out.append(route)
    return sorted(set(out))


def test_every_admin_url_refuses_a_post_without_a_csrf_token() -> None:
    superuser = User.objects.create_superuser("root-admin", password="root-pass-1")
    client = Client(enforce_csrf_checks=True)
    client.force_login(superuser)
    paths = admin_post_paths()
    assert len(paths) > 20
    accepted = []
    for path in paths:
        response = client.post(path, {"action": "delete_selected", "_selected_action": ["1"], "post": "yes"})
        if response.status_code != 403:
            accepted.append((path, response.status_code))
    assert accepted == []


def test_every_admin_action_refuses_a_post_without_a_csrf_token(rf: Any) -> None:
    superuser = User.objects.create_superuser("root-admin", password="root-pass-1")
    client = Client(enforce_csrf_checks=True)
    client.force_login(superuser)
    checked = 0
    for model, model_admin in admin.site._registry.items():
        request = rf.get("/admin/")
        request.user = superuser
        changelist = f"/admin/{model._meta.app_label}/{model._meta.model_name}/"
        for name in model_admin.get_actions(request):
            response = client.post(changelist, {"action": name, "_selected_action": ["1"], "index": "0"})
            assert response.status_code == 403, (changelist, name)
            checked += 1
    assert checked >= 5
