from __future__ import annotations

import logging

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect

from accounts import throttle

logger = logging.getLogger("accounts.throttle")


@never_cache
@csrf_protect
def admin_login(request: HttpRequest) -> HttpResponse:
    """The admin sign-in page. Each attempt first takes its slots in the throttle (per username and per client
    address); past either limit it is refused with 429 before the password is checked."""
    if request.method == "POST":
        username = str(request.POST.get("username", ""))
        address = throttle.client_address(request)
        wait = throttle.take_sign_in(username, address)
        if wait:
            logger.warning(
                "throttled sign-in for %r from %s",
                username,
                address,
                extra={"event": "auth.login_throttled", "client_address": address},
            )
            context = {
                **admin.site.each_context(request),
                "title": "Log in",
                "site_header": admin.site.site_header,
                "throttle_message": throttle.message(wait),
                "username": username,
            }
            response = TemplateResponse(request, "accounts/login_throttled.html", context, status=429)
            response["Retry-After"] = str(wait)
            return response
    return admin.site.login(request)
