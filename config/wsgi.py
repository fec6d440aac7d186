import os

from django.core.wsgi import get_wsgi_application

from observability.otel import bootstrap

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
bootstrap()
application = get_wsgi_application()
