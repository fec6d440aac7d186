import os

from django.core.asgi import get_asgi_application

from observability.otel import bootstrap
from workflows.events import require_listeners

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
bootstrap()
application = get_asgi_application()
require_listeners()  # every app that must guard the core's events has plugged in
