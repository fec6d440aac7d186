import os

from django.core.wsgi import get_wsgi_application

from observability.otel import bootstrap

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
bootstrap()
application = get_wsgi_application()
from workflows.events import require_listeners  # noqa: E402 - once the apps are loaded

require_listeners()  # every app that must guard the core's events has plugged in
