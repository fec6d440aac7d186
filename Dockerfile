# syntax=docker/dockerfile:1
# The service's image: web (gunicorn), worker and migrate all run it; see deploy/docker-compose.yml.
ARG PYTHON_VERSION=3.12

# --- build: a virtualenv with the service and its pinned dependencies ---------------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# The dependencies of pyproject.toml at the versions of constraints.txt (what `pip install -c constraints.txt .`
# installs); the service itself runs from its source tree in /app, where manage.py and templates/ live.
COPY pyproject.toml constraints.txt ./
RUN python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
        > requirements.txt \
    && pip install -c constraints.txt -r requirements.txt

# --- runtime: slim, non-root -----------------------------------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DJANGO_SETTINGS_MODULE=config.settings \
    VAR_DIR=/app/var
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --shell /usr/sbin/nologin app
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# Code stays owned by root and read-only for the service; only var/ is writable.
COPY . .
# Static files of the admin, collected at build time (no database, secret or webhook credential needed for it).
RUN mkdir -p /app/var \
    && SECRET_KEY=collectstatic-only WEBHOOK_ALLOW_UNAUTHENTICATED=true python manage.py collectstatic --noinput \
    && chown -R app:app /app/var
USER app
EXPOSE 9002
# gunicorn's config (config/gunicorn.py) initialises OpenTelemetry in each worker after the fork.
CMD ["gunicorn", "config.wsgi:application", "-c", "config/gunicorn.py", "--bind", "0.0.0.0:9002"]
