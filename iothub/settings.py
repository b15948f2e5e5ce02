"""Settings for iothub, read from the environment.

Every variable has a safe default for the zero-infrastructure demo (`manage.py runhub`):
SQLite under var/, an in-memory channel layer, a local-memory cache and eager Celery.
Point DATABASE_URL, REDIS_URL, MQTT_URL and KAFKA_BOOTSTRAP_SERVERS at real services
for production (`scripts/services.sh env` prints them for the local services).
"""

import importlib.util
import sys
from datetime import timedelta
from pathlib import Path

import environ
import orjson
import plotly
from celery.schedules import crontab
from csp.constants import NONCE, NONE, SELF
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()


def process_name():
    """What this process runs: its manage.py command, "web" (daphne) or "celery" (worker, beat)."""
    program = Path(sys.argv[0])
    if program.name == "manage.py":
        return sys.argv[1] if len(sys.argv) > 1 else ""
    for name, server in (("celery", "celery"), ("daphne", "web")):
        if program.name == name or name in program.parts:  # the script, or `python -m name`
            return server
    return ""


PROCESS = process_name()
# The demo (`manage.py runhub`) runs on embedded defaults; the test suite sets its own values
# (iothub/settings_test.py). Everything else fails closed: it does not start with a secret key
# everybody knows, nor without the Redis its process needs (docs/security.md).
DEMO = PROCESS == "runhub"
DEMO_SECRET_KEY = "iothub-demo-only-not-secret-never-deploy-it"  # 32+ bytes: it signs the demo's JWTs
KNOWN_SECRETS = {DEMO_SECRET_KEY, "iothub-demo-only-not-secret", "change-me", "changeme", "secret"}
# Commands that read neither the secret key nor a service (collectstatic runs at image build time).
OFFLINE_COMMANDS = {"collectstatic", "compilemessages", "makemessages", "makemigrations", "help"}
PROCESSES_NEEDING_REDIS = {"web", "celery", "ingest", "runserver"}

DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env("SECRET_KEY", default=DEMO_SECRET_KEY if DEMO or PROCESS in OFFLINE_COMMANDS else "")


def refuse_unsafe_settings():
    if DEMO or PROCESS in OFFLINE_COMMANDS:
        return
    how = 'set it to a long random value: python3 -c "import secrets; print(secrets.token_urlsafe(50))"'
    if not SECRET_KEY:
        raise ImproperlyConfigured(f"SECRET_KEY is not set; {how}")
    if SECRET_KEY in KNOWN_SECRETS:
        raise ImproperlyConfigured(f"SECRET_KEY is a published placeholder; {how}")
    # The rule of Django's `check --deploy` (security.W009).
    if len(SECRET_KEY) < 50 or len(set(SECRET_KEY)) < 5 or SECRET_KEY.startswith("django-insecure-"):
        raise ImproperlyConfigured(f"SECRET_KEY is too weak (at least 50 characters, 5 different ones); {how}")
    if not DEBUG and PROCESS in PROCESSES_NEEDING_REDIS and not env("REDIS_URL", default=""):
        raise ImproperlyConfigured(
            f"REDIS_URL is not set: the {PROCESS} process needs Redis for the channel layer, the cache and "
            "the Celery broker (without it, pushes stay in one process and tasks run inline)"
        )


refuse_unsafe_settings()
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# Behind HTTPS (production): secure cookies, HSTS and redirects; `manage.py check --deploy` is clean.
if env.bool("IOTHUB_HTTPS", default=False):
    SECURE_SSL_REDIRECT = True
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]  # probes speak plain HTTP inside the network
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31_536_000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
# Headers on every page (docs/security.md): the app's own assets only, inline scripts by nonce;
# X-Content-Type-Options nosniff and Referrer-Policy same-origin are Django's defaults.
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF, NONCE],
        "style-src": [SELF, "'unsafe-inline'"],  # Plotly writes the styles of its charts into the page
        "img-src": [SELF, "data:"],
        "font-src": [SELF, "data:"],
        "connect-src": [SELF],  # the API and the WebSocket of this host
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "apps.accounts",
    "import_export",
    "apps.devices",
    "apps.telemetry",
    "apps.alerts",
    "apps.dashboard",
    "apps.demo",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "django_otp.plugins.otp_static",
    "axes",
    "csp",
]
# Development tooling: the benchmark commands, where the package is present (not in the Docker image).
if importlib.util.find_spec("apps.bench"):
    INSTALLED_APPS.append("apps.bench")

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "apps.accounts.middleware.RequireSecondFactor",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "axes.middleware.AxesMiddleware",  # last: turns a locked-out login into iothub.lockout's answer
]

ROOT_URLCONF = "iothub.urls"
ASGI_APPLICATION = "iothub.asgi.application"

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

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'iothub.sqlite3'}"),
}
DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=60))
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The demo writes from several threads: wait for the lock instead of failing.
    DATABASES["default"]["OPTIONS"] = {"timeout": 30, "transaction_mode": "IMMEDIATE"}
    DATABASES["default"]["CONN_MAX_AGE"] = 0
elif env.bool("IOTHUB_DB_POOL", default=False):
    # The web process (iothub/asgi.py turns this on): under ASGI every request runs in a thread
    # of its own and Django's connections are per thread, so without a pool each request would
    # open a PostgreSQL connection, and the unused ones would linger until garbage-collected.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 2,
        "max_size": env.int("IOTHUB_DB_POOL_SIZE", default=20),
        "timeout": 10,
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env("REDIS_URL", default="")
# Several hubs (or test runs) can share one Redis: the namespace prefixes cache keys, channel
# layer keys and the Celery queue.
NAMESPACE = env("IOTHUB_NAMESPACE", default="iothub")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # redis-py 8 times reads out after 5 s, exactly channels-redis' 5 s BZPOPMIN: an idle
            # WebSocket would die. A longer socket timeout keeps blocking reads alive.
            "CONFIG": {
                "hosts": [{"address": REDIS_URL, "socket_timeout": 30}],
                "prefix": f"{NAMESPACE}:asgi",
                "capacity": 1000,
                "expiry": 30,
            },
        }
    }
    CACHES = {"default": {"BACKEND": "iothub.cache.SharedPoolRedisCache", "LOCATION": REDIS_URL, "KEY_PREFIX": NAMESPACE}}
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "OPTIONS": {"MAX_ENTRIES": 1_000_000}}}

CELERY_BROKER_URL = env("CELERY_BROKER_URL", default=REDIS_URL)
# Without a broker the demo runs tasks inline, in the process that fires them.
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
CELERY_TASK_DEFAULT_QUEUE = NAMESPACE
CELERY_TASK_SERIALIZER = "orjson"  # registered in iothub/celery.py
CELERY_ACCEPT_CONTENT = ["orjson", "json"]
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 4
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A publisher (the ingest's alert hand-off, beat, a view) learns at once that the broker is away,
# rather than waiting in kombu's reconnect loop for about 6 s on every call; redis-py still replaces
# a connection that went stale in a broker restart. The ingest holds what it could not send and
# retries from its loop (apps.telemetry.handoff). A worker's consumer reconnects by the
# broker_connection_* settings, which this does not touch.
CELERY_BROKER_TRANSPORT_OPTIONS = {"max_retries": 0}
# A worker outlives any broker outage: its consumer reconnects until the broker answers (Celery's
# default gives up after 100 attempts, and the worker exits).
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    CELERY_BROKER_TRANSPORT = "iothub.broker:RedisTransport"  # a worker survives a Redis restart under load
CELERY_TASK_IGNORE_RESULT = True
# Periodic work, run by `celery -A iothub beat` (and by runhub's in-process scheduler in the demo).
CELERY_BEAT_SCHEDULE = {
    "detect-offline": {"task": "apps.alerts.tasks.detect_offline", "schedule": 30.0},
    "remind-unacknowledged": {"task": "apps.alerts.tasks.remind_unacknowledged", "schedule": 60.0},
    "send-due-summaries": {"task": "apps.alerts.tasks.send_due_summaries", "schedule": 30.0},
    "refresh-alarm-rollups": {"task": "apps.alerts.tasks.refresh_alarm_rollups", "schedule": 60.0},
    "watch-storms": {"task": "apps.alerts.tasks.watch_storms", "schedule": 30.0},
    "expire-shelving": {"task": "apps.alerts.tasks.expire_shelving", "schedule": 30.0},
    "take-out-of-service": {"task": "apps.alerts.tasks.take_out_of_service", "schedule": 30.0},
    # Mondays 06:00 plant time (Celery keeps TIME_ZONE): the last seven plant days' alarm KPIs to staff and superusers.
    "weekly-kpi-report": {"task": "apps.alerts.tasks.send_kpi_report", "schedule": crontab(minute=0, hour=6, day_of_week="mon")},
    "watch-pipeline": {"task": "apps.alerts.tasks.watch_pipeline", "schedule": 15.0},
    "maintain-storage": {"task": "apps.telemetry.tasks.maintain_storage", "schedule": 3600.0},
    "refresh-rollups": {"task": "apps.telemetry.tasks.refresh_dirty_rollups", "schedule": 30.0},
}

MQTT_URL = env("MQTT_URL", default="mqtt://127.0.0.1:1883")
# The dynamic-security admin of Mosquitto: the web process provisions device credentials with it.
MQTT_ADMIN_URL = env("MQTT_ADMIN_URL", default="")
# TLS (mqtts:// URLs): the CA that signed the broker's certificate (unset: the system's CAs), and an
# optional client certificate and key of the hub's own.
MQTT_CA = env("IOTHUB_MQTT_CA", default="")
MQTT_CERT = env("IOTHUB_MQTT_CERT", default="")
MQTT_KEY = env("IOTHUB_MQTT_KEY", default="")
KAFKA_BOOTSTRAP_SERVERS = env("KAFKA_BOOTSTRAP_SERVERS", default="")

# Ingest tunables (documented in README.md).
IOTHUB = {
    "BATCH_SIZE": env.int("IOTHUB_BATCH_SIZE", default=5000),
    "FLUSH_INTERVAL": env.float("IOTHUB_FLUSH_INTERVAL", default=0.02),
    "MAX_PAYLOAD_BYTES": env.int("IOTHUB_MAX_PAYLOAD_BYTES", default=64 * 1024),
    "MAX_FUTURE_SKEW": env.int("IOTHUB_MAX_FUTURE_SKEW", default=300),
    "MAX_PAST_AGE": env.int("IOTHUB_MAX_PAST_AGE", default=7 * 86400),
    "DEVICE_CACHE_REFRESH": env.float("IOTHUB_DEVICE_CACHE_REFRESH", default=2.0),
    "LIVE_PUSH_INTERVAL": env.float("IOTHUB_LIVE_PUSH_INTERVAL", default=0.1),
    # Several MQTT ingest processes: a shared subscription group. Empty: one process, plain
    # subscription (Mosquitto 2.0 keeps it across broker restarts; shared ones it does not).
    "MQTT_SHARED_GROUP": env("IOTHUB_MQTT_SHARED_GROUP", default=""),
    "MQTT_SESSION_EXPIRY": env.int("IOTHUB_MQTT_SESSION_EXPIRY", default=86400),
    "KAFKA_PARTITIONS": env.int("IOTHUB_KAFKA_PARTITIONS", default=4),
    "KAFKA_RETENTION_MS": env.int("IOTHUB_KAFKA_RETENTION_MS", default=86400 * 1000),
    "KAFKA_TOPIC": env("IOTHUB_KAFKA_TOPIC", default="iothub.readings"),
    "KAFKA_DEADLETTER_TOPIC": env("IOTHUB_KAFKA_DEADLETTER_TOPIC", default="iothub.deadletter"),
    "KAFKA_GROUP": env("IOTHUB_KAFKA_GROUP", default="iothub-ingest"),
    # Prometheus endpoints of the ingest and worker processes (the web serves /metrics itself).
    "METRICS_ADDR": env("IOTHUB_METRICS_ADDR", default="127.0.0.1"),
    "INGEST_METRICS_PORT": env.int("IOTHUB_INGEST_METRICS_PORT", default=0),
    "WORKER_METRICS_PORT": env.int("IOTHUB_WORKER_METRICS_PORT", default=0),
    # System alerts on the pipeline (the seed report's defaults): evaluated by beat.
    "PIPELINE_WINDOW": env.int("IOTHUB_PIPELINE_WINDOW", default=300),
    "KAFKA_LAG_WARNING": env.int("IOTHUB_KAFKA_LAG_WARNING", default=10_000),
    "KAFKA_LAG_CRITICAL": env.int("IOTHUB_KAFKA_LAG_CRITICAL", default=100_000),
    "DEAD_LETTER_RATE_WARNING": env.float("IOTHUB_DEAD_LETTER_RATE_WARNING", default=0.01),
    "LATENCY_P99_WARNING": env.float("IOTHUB_LATENCY_P99_WARNING", default=1.0),
    "INGEST_SILENT_CRITICAL": env.int("IOTHUB_INGEST_SILENT_CRITICAL", default=60),
    # Alert storms: more than STORM_ALERTS alerts opened at one location within STORM_WINDOW seconds
    # fold into one storm alert of the location (evaluated by beat).
    "STORM_ALERTS": env.int("IOTHUB_STORM_ALERTS", default=10),
    "STORM_WINDOW": env.int("IOTHUB_STORM_WINDOW", default=600),
    # Messages/s one ingest process sustains (docs/benchmarks.md, bench_ingest --only throughput):
    # the pipeline-health page's capacity figures. Measure on your own hardware and set it.
    "INGEST_CAPACITY": env.int("IOTHUB_INGEST_CAPACITY", default=15000),
    "RETENTION_DAYS": env.int("IOTHUB_RETENTION_DAYS", default=30),
    "HOURLY_RETENTION_DAYS": env.int("IOTHUB_HOURLY_RETENTION_DAYS", default=365),
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
# A second factor (apps.accounts): staff who enrolled an authenticator give a code before the admin
# opens; with IOTHUB_REQUIRE_2FA=1 every superuser must enrol.
IOTHUB_REQUIRE_2FA = env.bool("IOTHUB_REQUIRE_2FA", default=False)
OTP_TOTP_ISSUER = "iothub"
# Login brute force (django-axes): after IOTHUB_LOGIN_FAILURE_LIMIT failed logins for one username
# or from one address within IOTHUB_LOGIN_LOCKOUT_MINUTES, further attempts (dashboard login, admin
# login, API token endpoints) are refused for that long. Attempts and failures are kept in the
# database, listed in the admin ("Axes"), where deleting an attempt unlocks it.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = env.int("IOTHUB_LOGIN_FAILURE_LIMIT", default=10)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("IOTHUB_LOGIN_LOCKOUT_MINUTES", default=15))
AXES_USE_ATTEMPT_EXPIRATION = True  # a failure counts for the cool-off window, then expires
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]  # either one reaching the limit locks
AXES_LOCKOUT_CALLABLE = "iothub.lockout.locked_out"
AXES_VERBOSE = False  # no banner at every process start; lockouts are logged as warnings
AXES_ENABLE_ACCESS_FAILURE_LOG = True  # every failed login as a row: the audit trail in the admin
LOGIN_REDIRECT_URL = "dashboard:overview"
LOGOUT_REDIRECT_URL = "login"

# The plant's language: notifications, the weekly report, and pages for a browser that asks for
# none of LANGUAGES. An operator's pages are in the browser's language or the one chosen in the header.
LANGUAGE_CODE = env("IOTHUB_LANGUAGE", default="en")
LANGUAGES = [("en", "English"), ("ko", "한국어")]
LOCALE_PATHS = [BASE_DIR / "locale"]
# Admin imports are all or nothing: a file with a bad row saves no row.
IMPORT_EXPORT_USE_TRANSACTIONS = True
TIME_ZONE = env("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise warns on every start without it
STATICFILES_DIRS = [BASE_DIR / "static"]

REST_FRAMEWORK = {
    # Personal API tokens (apps.accounts), JWT for integrators, the dashboard's session.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "apps.accounts.authentication.APITokenAuthentication",
        "rest_framework_simplejwt.authentication.JWTAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # orjson: a whole factory's realtime answer is megabytes; UTC times end in Z, as DRF writes them.
    "DEFAULT_RENDERER_CLASSES": ["drf_orjson_renderer.renderers.ORJSONRenderer", "rest_framework.renderers.BrowsableAPIRenderer"],
    "ORJSON_RENDERER_OPTIONS": (orjson.OPT_UTC_Z, orjson.OPT_NON_STR_KEYS),  # list fields key their errors by index
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "iothub.api.Pagination",
    "PAGE_SIZE": 100,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "iothub.api.api_exception_handler",
    "DEFAULT_THROTTLE_RATES": {
        "api": env("IOTHUB_API_RATE", default="6000/min"),
        "ingest": env("IOTHUB_INGEST_RATE", default="600/min"),
    },
}
# JWT (POST /api/v1/auth/token/): short-lived access tokens; each refresh hands out a new
# refresh token and blacklists the one used, so a stolen refresh token works once at most.
SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(seconds=env.int("IOTHUB_JWT_ACCESS_SECONDS", default=300)),
    "REFRESH_TOKEN_LIFETIME": timedelta(seconds=env.int("IOTHUB_JWT_REFRESH_SECONDS", default=86400)),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "UPDATE_LAST_LOGIN": True,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "iothub API",
    "VERSION": "1.0.0",
    "DESCRIPTION": (
        "**Getting a credential.** A personal API token: create, name and revoke yours on the hub's "
        "[API tokens](/accounts/tokens/) page (logged in), or on the server run "
        "`python manage.py api_token USERNAME --name NAME [--write]`; send it as `Authorization: Token <key>`. "
        "Read-only tokens only read. Or a JWT: `POST /api/v1/auth/token/` with username and password → "
        "`{access, refresh}`; send `Authorization: Bearer <access>` (5 minutes); `POST /api/v1/auth/token/refresh/` "
        "gives the next pair (each refresh token works once).\n\n"
        '**Errors** are JSON of one shape: `{"<field>" | "non_field_errors" | "detail": ["message", …]}`.\n\n'
        "Endpoints tagged **compatibility** serve the plant platform's realtime and aggregation services in its "
        "paths and shapes (docs/compatibility.md)."
    ),
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "PREPROCESSING_HOOKS": ["iothub.api.document_paths_once"],
    "TAGS": [
        {
            "name": "compatibility",
            "description": "The plant platform's realtime and aggregation services, in its paths and shapes "
            "(docs/compatibility.md); thresholds/ also take its flat form.",
        },
    ],
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
}

# Alert e-mails: the console in the demo; EMAIL_BACKEND=django.core.mail.backends.smtp.EmailBackend in production.
EMAIL_BACKEND = env("EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = env("EMAIL_HOST", default="localhost")
EMAIL_PORT = env.int("EMAIL_PORT", default=25)
EMAIL_HOST_USER = env("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=False)
EMAIL_TIMEOUT = 10
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", default="iothub <iothub@localhost>")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # LOG_FORMAT=json: one JSON object per line (time, level, logger, message, exception) with
    # whatever came in through `extra=`, such as the batch id of ingest and worker records.
    "formatters": {
        "json": {
            "()": "pythonjsonlogger.orjson.OrjsonFormatter",
            "fmt": "{asctime}{levelname}{name}{message}",
            "style": "{",
            "datefmt": "%Y-%m-%dT%H:%M:%S",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger", "exc_info": "exception"},
        },
        "text": {"format": "%(levelname)s %(name)s %(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": env("LOG_FORMAT", default="text")}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
    "loggers": {
        "daphne": {"level": "WARNING"},
        "axes": {"level": "WARNING"},  # a line per failed login at INFO; lockouts stay visible
        "amqtt": {"level": "WARNING"},
        "transitions": {"level": "WARNING"},
        "kombu": {"level": "ERROR"},
        "celery.app.trace": {"level": "WARNING"},  # one line per task is noise; failures still show
    },
}

# Plotly.js ships inside the plotly package: served locally, no CDN (plants often have no internet).
STATICFILES_DIRS += [("plotly", Path(plotly.__file__).parent / "package_data")]
# Serve static files straight from the app folders too, so the demo needs no collectstatic.
WHITENOISE_USE_FINDERS = True
