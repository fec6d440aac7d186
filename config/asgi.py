import os

from django.core.asgi import get_asgi_application

from observability.otel import bootstrap

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
bootstrap()
application = get_asgi_application()
