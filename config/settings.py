"""Settings, read from the environment. Every variable is listed in .env.example."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from config.env import envallowlist, envbool, envchoice, envfloat, envint, envlist, envsecret, envstr, envurl
from observability.logs import stdout_logging

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(envstr("VAR_DIR", str(BASE_DIR / "var")))

DEBUG = envbool("DEBUG", False)
TESTING = "pytest" in sys.modules or (len(sys.argv) > 1 and sys.argv[1] == "test")

SECRET_KEY = envsecret("SECRET_KEY")
if not SECRET_KEY:
    if not (DEBUG or TESTING):
        raise ImproperlyConfigured("SECRET_KEY is required when DEBUG is off (set SECRET_KEY or SECRET_KEY_FILE)")
    SECRET_KEY = "insecure-development-key-do-not-use-in-production"  # noqa: S105

ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if (DEBUG or TESTING) else [])
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS")
SITE_URL = envurl("SITE_URL", "http://localhost:9002")

INSTALLED_APPS = [
    "config.admin.ConsoleAdminConfig",  # django.contrib.admin with the console home page
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_prometheus",
    "django_tasks_db",
    "accounts",
    "agents",
    "workflows",
    "approvals",
    "observability",
    "alerts",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "config.middleware.BodySizeLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # After the static files, which need no database: during an outage everything below answers 503 at once.
    "config.middleware.DatabaseUnavailableMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------------------
DATABASE_URL = envstr("DATABASE_URL", f"sqlite:///{VAR_DIR / 'commandcenter.sqlite3'}")
try:
    _db = dj_database_url.parse(DATABASE_URL)
except (ValueError, KeyError) as exc:
    raise ImproperlyConfigured(f"DATABASE_URL is not a database URL this service understands: {exc}") from exc
if _db["ENGINE"] == "django.db.backends.sqlite3":
    Path(_db["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # One writer at a time, taken when the transaction begins, so that web and worker queue for the write
    # lock instead of failing with "database is locked" half-way through a transaction.
    _db["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
elif _db["ENGINE"] == "django.db.backends.postgresql":
    if envbool("DATABASE_POOL", not TESTING):
        from config.outage import MonitoredConnection, check_pooled_connection

        _db["OPTIONS"] = {
            "pool": {
                "min_size": envint("DATABASE_POOL_MIN", 1, minimum=0),
                "max_size": envint("DATABASE_POOL_MAX", 10, minimum=1),
                # A request waits this long for a connection; only an outage (or a pool too small for the
                # threads using it) makes it wait at all, and then it should fail fast with a 503.
                "timeout": envfloat("DATABASE_POOL_TIMEOUT", 2.0, minimum=0.1),
                # Every connection is tested before it is handed out (config/outage.py), so none that died
                # with a restarted server reaches a request or a worker.
                "check": check_pooled_connection,
                "connection_class": MonitoredConnection,
                # How long the pool keeps retrying, with back-off, to open a connection before it gives up and
                # waits for the next request to try again: short, so that the first try after an outage is
                # never more than a second or two behind.
                "reconnect_timeout": 2.0,
            }
        }
        _db["CONN_MAX_AGE"] = 0
    else:
        _db["CONN_MAX_AGE"] = envint("DATABASE_CONN_MAX_AGE", 0 if TESTING else 60, minimum=0)
        _db["CONN_HEALTH_CHECKS"] = True
    _db.setdefault("OPTIONS", {})["connect_timeout"] = envint("DATABASE_CONNECT_TIMEOUT", 5, minimum=1)
else:
    raise ImproperlyConfigured(f"DATABASE_URL must point to PostgreSQL or SQLite, not {_db['ENGINE']}")
DATABASES = {"default": _db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Background work ------------------------------------------------------------------------------------
TASK_BACKEND = envchoice("TASK_BACKEND", "database", ("database", "rq"))
if TASK_BACKEND == "database":
    TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["default"]}}
else:
    REDIS_URL = envstr("REDIS_URL", "redis://127.0.0.1:6379/0")
    INSTALLED_APPS += ["django_rq"]
    RQ_QUEUES = {"default": {"URL": REDIS_URL}}
    TASKS = {"default": {"BACKEND": "django_tasks_rq.RQBackend", "QUEUES": ["default"]}}

# Runner: see workflows/runner/ for what each knob governs.
RUNNER_LEASE_SECONDS = envfloat("RUNNER_LEASE_SECONDS", 30.0, minimum=1.0)
RUNNER_REAPER_INTERVAL = envfloat("RUNNER_REAPER_INTERVAL", 5.0, minimum=0.1)
RUNNER_READY_GRACE_SECONDS = envfloat("RUNNER_READY_GRACE_SECONDS", 60.0, minimum=1.0)
RUNNER_DEFAULT_TIMEOUT_SECONDS = envfloat("RUNNER_DEFAULT_TIMEOUT_SECONDS", 300.0, minimum=0.1)
WORKER_POLL_INTERVAL = envfloat("WORKER_POLL_INTERVAL", 1.0, minimum=0.01)
WORKER_SHUTDOWN_GRACE_SECONDS = envfloat("WORKER_SHUTDOWN_GRACE_SECONDS", 8.0, minimum=0.0)
# Attempts cut short by infrastructure (worker lost, database unreachable, shutdown) do not count against a node's
# max_attempts; a step is put back at most this many times for them before it fails.
RUNNER_INFRASTRUCTURE_RETRIES = envint("RUNNER_INFRASTRUCTURE_RETRIES", 5, minimum=0)

# Retention: what each worker's maintenance prunes (workflows/retention.py). 0 keeps that kind forever.
TASK_RESULT_RETENTION_HOURS = envint("TASK_RESULT_RETENTION_HOURS", 72, minimum=0)
ALERT_RETENTION_DAYS = envint("ALERT_RETENTION_DAYS", 30, minimum=0)
RUN_RETENTION_DAYS = envint("RUN_RETENTION_DAYS", 0, minimum=0)
RETENTION_INTERVAL_SECONDS = envfloat("RETENTION_INTERVAL_SECONDS", 300.0, minimum=0.0)

# Agents
COMMAND_AGENT_ALLOWLIST = envlist("COMMAND_AGENT_ALLOWLIST", [])
PYTHON_AGENT_ALLOWED_MODULES = envlist("PYTHON_AGENT_ALLOWED_MODULES", ["agents.demo"])
HTTP_AGENT_TIMEOUT_SECONDS = envfloat("HTTP_AGENT_TIMEOUT_SECONDS", 10.0, minimum=0.1)
HTTP_ALLOW_PRIVATE_ADDRESSES = envbool("HTTP_ALLOW_PRIVATE_ADDRESSES", DEBUG or TESTING)
# With the switch above off, the private destinations outgoing requests may still reach: CIDRs, addresses and
# host names, comma-separated. Link-local and cloud metadata addresses (169.254.0.0/16, fe80::/10,
# fd00:ec2::254) open only through a network listed inside their own range, never through a host name or a
# wider range that happens to contain them.
HTTP_ALLOWED_PRIVATE_NETWORKS = envallowlist("HTTP_ALLOWED_PRIVATE_NETWORKS")

# API
API_MAX_BODY_BYTES = envint("API_MAX_BODY_BYTES", 1_048_576, minimum=1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = API_MAX_BODY_BYTES

# Workflow definitions synced by `manage.py sync_workflows` and `make run`
WORKFLOW_DEFINITIONS_DIR = Path(envstr("WORKFLOW_DEFINITIONS_DIR", str(BASE_DIR / "workflows" / "definitions")))

# --- Grafana deep links (the uids match deploy/grafana/provisioning) ------------------------------------
GRAFANA_URL = envurl("GRAFANA_URL")
GRAFANA_ORG_ID = envint("GRAFANA_ORG_ID", 1, minimum=1)
GRAFANA_PROMETHEUS_UID = envstr("GRAFANA_PROMETHEUS_UID", "prometheus")
GRAFANA_TEMPO_UID = envstr("GRAFANA_TEMPO_UID", "tempo")
GRAFANA_LOKI_UID = envstr("GRAFANA_LOKI_UID", "loki")
GRAFANA_WORKFLOW_DASHBOARD_UID = envstr("GRAFANA_WORKFLOW_DASHBOARD_UID", "workflow-overview")

# --- Security -------------------------------------------------------------------------------------------
# Production (DEBUG off) defaults are the hardened ones; `manage.py check --deploy` is clean with them when
# TLS is terminated in front of the service (BEHIND_TLS_PROXY=true). See config/checks.py for our own checks.
_PRODUCTION = not DEBUG and not TESTING
BEHIND_TLS_PROXY = envbool("BEHIND_TLS_PROXY", False)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if BEHIND_TLS_PROXY else None
SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", _PRODUCTION and BEHIND_TLS_PROXY)
# Probes and scrapes come over plain HTTP from inside the cluster.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SESSION_COOKIE_SECURE = envbool("SESSION_COOKIE_SECURE", _PRODUCTION)
CSRF_COOKIE_SECURE = envbool("CSRF_COOKIE_SECURE", _PRODUCTION)
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_AGE = envint("SESSION_COOKIE_AGE", 12 * 3600, minimum=60)
# HSTS is only sent over HTTPS; a year by default in production.
SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", 31_536_000 if _PRODUCTION else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool("SECURE_HSTS_INCLUDE_SUBDOMAINS", _PRODUCTION)
SECURE_HSTS_PRELOAD = envbool("SECURE_HSTS_PRELOAD", _PRODUCTION)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Admin sign-in throttle (accounts/throttle.py): after this many failed attempts for one username (from any
# address), or from one client address (for any usernames), within the window, further attempts are refused
# without checking the password until the window has passed.
ADMIN_LOGIN_MAX_FAILURES = envint("ADMIN_LOGIN_MAX_FAILURES", 5, minimum=1)
ADMIN_LOGIN_MAX_FAILURES_PER_ADDRESS = envint("ADMIN_LOGIN_MAX_FAILURES_PER_ADDRESS", 20, minimum=1)
ADMIN_LOGIN_WINDOW_SECONDS = envint("ADMIN_LOGIN_WINDOW_SECONDS", 900, minimum=1)
# API tokens: after this many wrong tokens from one client address within the window, requests from it that
# carry an Authorization header are answered 429 until the window has passed.
API_TOKEN_MAX_FAILURES = envint("API_TOKEN_MAX_FAILURES", 20, minimum=1)
API_TOKEN_FAILURE_WINDOW_SECONDS = envint("API_TOKEN_FAILURE_WINDOW_SECONDS", 300, minimum=1)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = envstr("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
with contextlib.suppress(OSError):  # whitenoise serves from here; collectstatic fills it
    STATIC_ROOT.mkdir(parents=True, exist_ok=True)

# --- Logging --------------------------------------------------------------------------------------------
LOG_LEVEL = envchoice("LOG_LEVEL", "info", ("debug", "info", "warning", "error")).upper()
LOG_FORMAT = envchoice("LOG_FORMAT", "json" if not DEBUG else "text", ("json", "text"))
LOGGING = {
    **stdout_logging(LOG_FORMAT, LOG_LEVEL),
    "loggers": {
        # Django's own defaults (django.utils.log.DEFAULT_LOGGING, applied before this) give "django" a
        # plain-text stderr handler with DEBUG on (and mail_admins, idle without ADMINS) and "django.server"
        # (runserver's request lines) a stderr handler that does not propagate. Without handlers of their own,
        # django.* (django.request, django.tasks, ...) reach stdout once, through the root's handler, as
        # django_tasks_db and every other library does; the level is LOG_LEVEL like everything else.
        "django": {"handlers": [], "level": LOG_LEVEL, "propagate": True},
        "django.server": {"handlers": [], "level": LOG_LEVEL, "propagate": True},
        "django.db.backends": {"level": "INFO"},
        # httpx logs every request with its full URL at INFO; a notifier's webhook URL is a secret.
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
    },
}

PROMETHEUS_EXPORT_MIGRATIONS = False

# --- Telemetry (OpenTelemetry) --------------------------------------------------------------------------
# observability/otel.py reads the standard OTEL_* variables itself (OTEL_SDK_DISABLED, OTEL_SERVICE_NAME,
# OTEL_RESOURCE_ATTRIBUTES, OTEL_EXPORTER_OTLP_*, OTEL_{TRACES,METRICS,LOGS}_EXPORTER, OTEL_TRACES_SAMPLER);
# these are the project's own additions. TELEMETRY_SHUTDOWN_TIMEOUT_SECONDS bounds the flush at exit: a reachable
# collector takes what is buffered in milliseconds, and one that is down must not hold up a stopping process.
DEPLOYMENT_ENVIRONMENT = envstr("DEPLOYMENT_ENVIRONMENT", "development" if DEBUG else "production")
TELEMETRY_SHUTDOWN_TIMEOUT_SECONDS = envfloat("TELEMETRY_SHUTDOWN_TIMEOUT_SECONDS", 1.0, minimum=0.0)
# Set by config/gunicorn.py: /metrics (django-prometheus) then adds up every gunicorn worker's metrics.
PROMETHEUS_MULTIPROC_DIR = envstr("PROMETHEUS_MULTIPROC_DIR")
if PROMETHEUS_MULTIPROC_DIR:
    Path(PROMETHEUS_MULTIPROC_DIR).mkdir(parents=True, exist_ok=True)
# django-prometheus' request latency histograms, per view and method: ten buckets instead of seventeen keep
# them under Prometheus' cardinality budget (100 series per metric) for a few dozen endpoints.
PROMETHEUS_LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, float("inf"))
# A file each worker's maintenance loop touches on every pass: its liveness probe (workflows/heartbeat.py).
WORKER_HEARTBEAT_FILE = envstr("WORKER_HEARTBEAT_FILE")
# --- end of telemetry settings ----------------------------------------------------------------------------

# --- Alert webhook and notifiers (alerts/, agents/notifiers) ---------------------------------
# POST /webhooks/grafana authentication: a bearer token, Grafana's HMAC signature, or both (then both must
# pass). Grafana signs "<timestamp>:<body>" when its contact point names a timestamp header; this must be
# the same header name. Empty WEBHOOK_TIMESTAMP_HEADER accepts signatures over the body alone (no replay
# window). With neither secret set the webhook would take anyone's alerts (and a forged "resolved" alert
# expires approval gates), so outside DEBUG that stops the process at start-up unless
# WEBHOOK_ALLOW_UNAUTHENTICATED says authentication is done in front of the service.
WEBHOOK_TOKEN = envsecret("WEBHOOK_TOKEN")
WEBHOOK_HMAC_SECRET = envsecret("WEBHOOK_HMAC_SECRET")
WEBHOOK_ALLOW_UNAUTHENTICATED = envbool("WEBHOOK_ALLOW_UNAUTHENTICATED", False)
if not (DEBUG or TESTING or WEBHOOK_TOKEN or WEBHOOK_HMAC_SECRET or WEBHOOK_ALLOW_UNAUTHENTICATED):
    raise ImproperlyConfigured(
        "WEBHOOK_TOKEN or WEBHOOK_HMAC_SECRET (or their *_FILE variants) is required when DEBUG is off: without "
        "one, anyone who reaches /webhooks/grafana can start runs and expire approval gates. Set "
        "WEBHOOK_ALLOW_UNAUTHENTICATED=true only if a proxy in front of the service authenticates the sender."
    )
WEBHOOK_TIMESTAMP_HEADER = envstr("WEBHOOK_TIMESTAMP_HEADER", "X-Grafana-Alerting-Signature-Timestamp").strip()
WEBHOOK_TIMESTAMP_TOLERANCE_SECONDS = envint("WEBHOOK_TIMESTAMP_TOLERANCE_SECONDS", 300, minimum=1)
# A repeat of the same alert (fingerprint, status, startsAt) within this window starts no second run.
WEBHOOK_DEDUP_WINDOW_SECONDS = envint("WEBHOOK_DEDUP_WINDOW_SECONDS", 3600, minimum=0)
# The middleware caps every body at API_MAX_BODY_BYTES first; this limit only matters when it is lower.
WEBHOOK_MAX_BODY_BYTES = envint("WEBHOOK_MAX_BODY_BYTES", 1_048_576, minimum=1024)
# Workflows that an alert's `workflow` label may select instead of alert-notification.
ALERT_WORKFLOW_DEFAULT = envstr("ALERT_WORKFLOW_DEFAULT", "alert-notification")
ALERT_WORKFLOW_ALLOWLIST = envlist("ALERT_WORKFLOW_ALLOWLIST", [])
# Runbooks: a `runbook_url` annotation wins; else RUNBOOK_URL_MAP ("AlertName=url,Other=url"). A relative
# runbook path (e.g. deploy/runbooks/x.md) is joined to RUNBOOK_BASE_URL.
RUNBOOK_URL_MAP: dict[str, str] = {}
for _item in envlist("RUNBOOK_URL_MAP", []):
    _name, _sep, _url = _item.partition("=")
    if not (_sep and _name.strip() and _url.strip()):
        raise ImproperlyConfigured(f"RUNBOOK_URL_MAP item {_item!r} is not of the form AlertName=url")
    RUNBOOK_URL_MAP[_name.strip()] = _url.strip()
RUNBOOK_BASE_URL = envurl("RUNBOOK_BASE_URL")
# Notifier defaults (an agent's config may override timeout_seconds and retries).
NOTIFIER_TIMEOUT_SECONDS = envfloat("NOTIFIER_TIMEOUT_SECONDS", 10.0, minimum=0.1)
NOTIFIER_RETRIES = envint("NOTIFIER_RETRIES", 2, minimum=0, maximum=10)
NOTIFIER_SIGNATURE_HEADER = envstr("NOTIFIER_SIGNATURE_HEADER", "X-CommandCenter-Signature")
NOTIFIER_TIMESTAMP_HEADER = envstr("NOTIFIER_TIMESTAMP_HEADER", "X-CommandCenter-Timestamp")
# Email channel: Django's default mailer (SMTP unless EMAIL_BACKEND names another backend, e.g.
# django.core.mail.backends.console.EmailBackend to print messages). The tests swap in locmem.
_email_backend = envstr("EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
_email_options: dict[str, object] = {}
if _email_backend == "django.core.mail.backends.smtp.EmailBackend":
    _email_options = {
        "host": envstr("EMAIL_HOST", "localhost"),
        "port": envint("EMAIL_PORT", 25, minimum=1, maximum=65535),
        "username": envstr("EMAIL_HOST_USER"),
        "password": envsecret("EMAIL_HOST_PASSWORD"),
        "use_tls": envbool("EMAIL_USE_TLS", False),
        "use_ssl": envbool("EMAIL_USE_SSL", False),
        "timeout": envint("EMAIL_TIMEOUT", 10, minimum=1),
    }
    if _email_options["use_tls"] and _email_options["use_ssl"]:
        raise ImproperlyConfigured("EMAIL_USE_TLS and EMAIL_USE_SSL are mutually exclusive; set at most one")
MAILERS = {"default": {"BACKEND": _email_backend, "OPTIONS": _email_options}}
DEFAULT_FROM_EMAIL = envstr("DEFAULT_FROM_EMAIL", "commandcenter@localhost")
# --- end of alert webhook and notifier settings ------------------------------------------------------------
