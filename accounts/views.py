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
    """The admin sign-in page, refusing (429) a username that failed too often from this address."""
    if request.method == "POST":
        username = str(request.POST.get("username", ""))
        address = throttle.client_address(request)
        wait = throttle.retry_after(username, address) if username else 0
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
