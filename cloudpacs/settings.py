"""The one settings module. Every value that differs between machines comes from the
environment through the typed readers in cloudpacs.env; .env.example lists them all."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from django.utils.translation import gettext_lazy as _

from cloudpacs.env import (
    ConfigError,
    database_from_url,
    env_ae_title,
    env_bool,
    env_choice,
    env_file,
    env_float,
    env_hours,
    env_int,
    env_list,
    env_networks,
    env_optional,
    env_path,
    env_str,
    env_table,
)

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = env_path("YUNYING_VAR_DIR", BASE_DIR / "var")

DEBUG = env_bool("DEBUG", False)
_DEV_SECRET = "dev-only-insecure-secret-key-change-me-in-production-0123456789"  # noqa: S105
SECRET_KEY = env_str("SECRET_KEY", _DEV_SECRET)
if SECRET_KEY == _DEV_SECRET and not DEBUG and env_bool("YUNYING_PRODUCTION", False):
    raise ConfigError("SECRET_KEY must be set when YUNYING_PRODUCTION=true")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
# The address printed to users and put in report QR codes.
SITE_URL = env_str("SITE_URL", "http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "knox",
    "drf_spectacular",
    "facilities",
    "cloudpacs",
    "consults",
    "billing",
    "dicomnode",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "cloudpacs.middleware.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "cloudpacs.middleware.RefuseNulMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "facilities.middleware.IdleSessionMiddleware",
    "cloudpacs.middleware.ChosenLanguageMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "cloudpacs.urls"
WSGI_APPLICATION = "cloudpacs.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Database: an embedded SQLite file by default, PostgreSQL when DATABASE_URL says so.
SQLITE_BUSY_TIMEOUT = env_float("SQLITE_BUSY_TIMEOUT", 30.0, minimum=0.0)
DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'yunying.sqlite3'}")
DATABASES = {"default": database_from_url("DATABASE_URL", DATABASE_URL, sqlite_timeout=SQLITE_BUSY_TIMEOUT)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The receiver's tests serve associations from threads: an in-memory test database
    # is shared between them through SQLite's shared cache, which fails concurrent writers
    # with "table is locked"; a file has WAL and the busy timeout, as in production. One
    # file per test process, so that test runs in parallel do not collide.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-{os.getpid()}.sqlite3")}
    # SQLite creates the file but not its folder: a fresh clone has no var/ yet.
    for _sqlite_file in (DATABASES["default"]["NAME"], DATABASES["default"]["TEST"]["NAME"]):
        Path(_sqlite_file).parent.mkdir(parents=True, exist_ok=True)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_USER_MODEL = "facilities.User"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    # Django's own rule, with its message in Chinese (Django's catalogue lacks it).
    {"NAME": "facilities.passwords.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# A session ends after this many minutes without a request (renewed as the user works, by
# facilities.middleware.IdleSessionMiddleware), and when the browser closes.
SESSION_IDLE_MINUTES = env_int("SESSION_IDLE_MINUTES", 30, minimum=1, maximum=24 * 60)
SESSION_COOKIE_AGE = SESSION_IDLE_MINUTES * 60
SESSION_EXPIRE_AT_BROWSER_CLOSE = True
# Password attempts within a window of LOGIN_LOCKOUT_MINUTES: LOGIN_MAX_FAILURES for a
# username from browsers its user has not signed in from (and for each one they have),
# LOGIN_ADDRESS_MAX_FAILURES for one client address whatever the names tried. A browser
# is remembered for LOGIN_DEVICE_DAYS after a sign-in. Policy: docs/operations.md.
LOGIN_MAX_FAILURES = env_int("LOGIN_MAX_FAILURES", 5, minimum=1)
LOGIN_LOCKOUT_MINUTES = env_int("LOGIN_LOCKOUT_MINUTES", 15, minimum=1)
LOGIN_ADDRESS_MAX_FAILURES = env_int("LOGIN_ADDRESS_MAX_FAILURES", 20, minimum=1)
LOGIN_DEVICE_DAYS = env_int("LOGIN_DEVICE_DAYS", 90, minimum=1)

# Chinese first, English second.
LANGUAGE_CODE = env_choice("LANGUAGE_CODE", "zh-hans", {"zh-hans", "en"})
LANGUAGES = [("zh-hans", _("简体中文")), ("en", _("English"))]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = env_str("TIME_ZONE", "Asia/Shanghai")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = env_path("STATIC_ROOT", VAR_DIR / "staticfiles")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = DEBUG
# Every file of the built viewer is named by its content's hash (frontend/vite.config.js):
# the entry viewer-<hash>.js and viewer-<hash>.css, which the templates find through the
# build's manifest (cloudpacs/templatetags/viewer_build.py), its chunks, workers and
# WebAssembly. Cached for good, never asked again.
WHITENOISE_IMMUTABLE_FILE_TEST = (
    r"/viewer/(?:(?:chunks|workers|assets)/[^/]+|viewer)-[A-Za-z0-9_-]{8}\.(?:js|wasm|css)$"
)

# The image store: DICOM files as received, under one root (local), or objects in an
# S3-compatible store (s3), STORAGE_ROOT then holding only the receiving node's spool.
STORAGE_ROOT = env_path("STORAGE_ROOT", VAR_DIR / "storage")
STORAGE_BACKEND = env_choice("STORAGE_BACKEND", "local", {"local", "s3"})
S3_ENDPOINT_URL = env_optional("S3_ENDPOINT_URL")
S3_BUCKET = env_str("S3_BUCKET", "")
S3_PREFIX = env_str("S3_PREFIX", "")
S3_REGION = env_str("S3_REGION", "us-east-1")
S3_ACCESS_KEY_ID = env_optional("S3_ACCESS_KEY_ID")
S3_SECRET_ACCESS_KEY = env_optional("S3_SECRET_ACCESS_KEY")
S3_ADDRESSING_STYLE = env_choice("S3_ADDRESSING_STYLE", "path", {"path", "virtual", "auto"})
S3_TIMEOUT = env_float("S3_TIMEOUT", 10.0, minimum=0.1)
S3_MAX_ATTEMPTS = env_int("S3_MAX_ATTEMPTS", 3, minimum=1, maximum=10)
S3_CA_BUNDLE = env_file("S3_CA_BUNDLE")
if STORAGE_BACKEND == "s3" and not S3_BUCKET:
    raise ConfigError("STORAGE_BACKEND=s3 needs S3_BUCKET")

# The DICOM receiver.
DICOM_AE_TITLE = env_ae_title("DICOM_AE_TITLE", "CLOUDPACS")
DICOM_HOST = env_str("DICOM_HOST", "127.0.0.1")
DICOM_PORT = env_int("DICOM_PORT", 11112, minimum=0, maximum=65535)
DICOM_CHECK_PEER_ADDRESS = env_bool("DICOM_CHECK_PEER_ADDRESS", False)
DICOM_MAX_PDU = env_int("DICOM_MAX_PDU", 131072, minimum=0)
# Optional TLS for associations: a PEM certificate (chain) and its key; with a CA bundle,
# consoles must present a client certificate signed by it.
DICOM_TLS_CERT = env_file("DICOM_TLS_CERT")
DICOM_TLS_KEY = env_file("DICOM_TLS_KEY")
DICOM_TLS_CA = env_file("DICOM_TLS_CA")
if (DICOM_TLS_KEY or DICOM_TLS_CA) and not DICOM_TLS_CERT:
    raise ConfigError("DICOM_TLS_KEY and DICOM_TLS_CA need DICOM_TLS_CERT, the receiver's certificate")
# The receiver's front door (dicomnode.connections): seconds from connecting (a TLS handshake
# included) to a complete A-ASSOCIATE-RQ; associations of registered AE titles at once;
# connections waiting for their A-ASSOCIATE-RQ from addresses no registered title has come
# from yet; connections of any kind from one peer address.
DICOM_ASSOCIATE_TIMEOUT = env_float("DICOM_ASSOCIATE_TIMEOUT", 5.0, minimum=0.1)
DICOM_MAX_ASSOCIATIONS = env_int("DICOM_MAX_ASSOCIATIONS", 64, minimum=1)
DICOM_MAX_WAITING_CONNECTIONS = env_int("DICOM_MAX_WAITING_CONNECTIONS", 64, minimum=1)
DICOM_MAX_CONNECTIONS_PER_ADDRESS = env_int("DICOM_MAX_CONNECTIONS_PER_ADDRESS", 16, minimum=1)
# Processes serving associations on the one port (dicomnode.processes): 1 serves them from
# threads of the receiver's own process, under one interpreter lock; more, from that many
# worker processes, with the front door's limits kept by the parent for all of them. By
# default one per core the receiver may run on (1 on a single core).
DICOM_RECEIVER_PROCESSES = env_int(
    "DICOM_RECEIVER_PROCESSES", min(len(os.sched_getaffinity(0)), 64), minimum=1, maximum=64
)
# Addresses (or networks) of TCP proxies (HAProxy in TCP mode, send-proxy-v2) whose
# connections begin with a PROXY protocol v2 header naming the real peer; the limits per
# address, DICOM_CHECK_PEER_ADDRESS and the association log then see that peer. A PROXY
# header from any other address is refused.
DICOM_PROXY_ADDRESSES = env_networks("DICOM_PROXY_ADDRESSES")
# Limits per association: instances stored in one association, and bytes of one instance.
DICOM_MAX_INSTANCES_PER_ASSOCIATION = env_int("DICOM_MAX_INSTANCES_PER_ASSOCIATION", 10000, minimum=1)
DICOM_MAX_INSTANCE_BYTES = env_int("DICOM_MAX_INSTANCE_BYTES", 2 * 1024**3, minimum=1)
# Matches one Query/Retrieve C-FIND answers (newest first); beyond it the answer ends with
# 0xFE00 as Orthanc's LimitFindResults does. 0: no cap.
DICOM_FIND_MAX_RESULTS = env_int("DICOM_FIND_MAX_RESULTS", 1000, minimum=0)
# Decoded pixel bytes of one instance that C-MOVE/C-GET decompress for a peer taking only
# uncompressed syntaxes; past it that sub-operation fails (cloudpacs.transcoding). Pynetdicom
# holds the whole encoded message, so it is also the pixels one process's sub-operations
# hold at once (dicomnode.queryretrieve.PixelBudget).
DICOM_RETRIEVE_MAX_DECOMPRESSED_BYTES = env_int("DICOM_RETRIEVE_MAX_DECOMPRESSED_BYTES", 96 * 1024 * 1024, minimum=1)
# Another content under a stored SOP Instance UID (a correction): same_source (the modality
# that sent the study replaces it until the report is signed, then it waits as a pending
# correction; other modalities are refused), any_source, or never (always refused).
DICOM_OVERWRITE_POLICY = env_choice("DICOM_OVERWRITE_POLICY", "same_source", {"same_source", "any_source", "never"})
STUDY_STABLE_SECONDS = env_float("STUDY_STABLE_SECONDS", 10.0, minimum=0.0)
# Issuers of Patient ID whose identifiers name the same person in every facility (a
# national ID, as the townships' systems write its issuer in Other Patient IDs Sequence or
# as the Patient ID's own issuer). Only these link a patient's studies across facilities
# (the priors beside a study); a bare Patient ID never does. Empty: no linking across.
SHARED_PATIENT_ID_ISSUERS = env_list("SHARED_PATIENT_ID_ISSUERS", [])

# The web server started by `manage.py platform`.
WEB_HOST = env_str("WEB_HOST", "127.0.0.1")
WEB_PORT = env_int("WEB_PORT", 8000, minimum=1, maximum=65535)
# Every part (web, receiver, worker, beat, ticker) writes a heartbeat this often; three
# missed in a row show it as down on the status page and fail `manage.py alive`.
HEARTBEAT_SECONDS = env_float("HEARTBEAT_SECONDS", 10.0, minimum=0.5)
# The status page warns when the image store's filesystem has less free than this share.
STORAGE_FREE_WARNING = env_float("STORAGE_FREE_WARNING", 0.1, minimum=0.0)

# Tasks: in-process when no broker is configured, Celery workers over Redis when one is.
CELERY_BROKER_URL = env_optional("CELERY_BROKER_URL")
CELERY_RESULT_BACKEND = env_optional("CELERY_RESULT_BACKEND")
CELERY_TASK_ALWAYS_EAGER = CELERY_BROKER_URL is None
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TIMEZONE = TIME_ZONE
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
if CELERY_BROKER_URL is not None and not CELERY_BROKER_URL.startswith(("redis://", "rediss://", "memory://")):
    raise ConfigError(f"CELERY_BROKER_URL={CELERY_BROKER_URL!r} must be a redis:// URL")
# Seconds a broker that does not answer (down, or frozen and still accepting connections)
# may hold anyone up: the socket and connect timeouts of every broker connection, and the
# most a web request or the receiver waits to hand over a task. What the task was for is
# saved first (an outbox row, a consult the periodic check looks at), so a task the broker
# did not take is done by the next periodic run instead.
BROKER_TIMEOUT = env_float("BROKER_TIMEOUT", 2.0, minimum=0.1)
CELERY_BROKER_TRANSPORT_OPTIONS = {"socket_timeout": BROKER_TIMEOUT, "socket_connect_timeout": BROKER_TIMEOUT}

EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1, maximum=65535)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
if EMAIL_USE_TLS and EMAIL_USE_SSL:
    raise ConfigError("EMAIL_USE_TLS and EMAIL_USE_SSL exclude each other; set one")
# Seconds before a mail server that does not answer is given up on: alerts are sent from
# the periodic check, which must not hang on it.
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 10, minimum=1)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "yunying@localhost")

# DICOMweb: origins (comma list) of a separately hosted viewer such as OHIF that may call
# /dicomweb/ from the browser; empty: same-origin only.
DICOMWEB_CORS_ORIGINS = env_list("DICOMWEB_CORS_ORIGINS", [])

# API tokens (django-rest-knox): stored as SHA-512 digests, made and revoked by each user
# on their "API tokens" page, valid for at most API_TOKEN_MAX_DAYS.
KNOX_TOKEN_MODEL = "facilities.ApiToken"  # noqa: S105 (a model's name)
# Knox's migrations would create its own token table (swapped out, unused, and referencing
# the users); without them Django creates no table for a swapped model.
MIGRATION_MODULES = {"knox": None}
API_TOKEN_MAX_DAYS = env_int("API_TOKEN_MAX_DAYS", 365, minimum=1)
REST_KNOX = {
    "TOKEN_MODEL": KNOX_TOKEN_MODEL,
    "AUTH_HEADER_PREFIX": "Token",
    # A fixed start makes a leaked token recognisable to secret scanners.
    "TOKEN_PREFIX": "yy_",
    "TOKEN_TTL": timedelta(days=90),
    "AUTO_REFRESH": False,
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

# The OpenAPI schema at /api/schema/ (cloudpacs/openapi.py adds the DICOMweb routes).
SPECTACULAR_SETTINGS = {
    "TITLE": "Yunying API",
    "DESCRIPTION": "DICOMweb (PS3.18) and REST interfaces of the Yunying cloud PACS.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "cloudpacs.openapi.add_dicomweb_paths",
    ],
}

# Production hardening, on when DEBUG is off and the site is served over HTTPS.
SECURE_HTTPS = env_bool("SECURE_HTTPS", False)
SESSION_COOKIE_SECURE = SECURE_HTTPS
CSRF_COOKIE_SECURE = SECURE_HTTPS
SECURE_SSL_REDIRECT = SECURE_HTTPS
SECURE_HSTS_SECONDS = 31536000 if SECURE_HTTPS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HTTPS
SECURE_HSTS_PRELOAD = SECURE_HTTPS
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if SECURE_HTTPS else None
# Reverse proxies (comma list of addresses) whose X-Forwarded-For names the client that the
# audit trail records; from anyone else the header is ignored.
TRUSTED_PROXIES = env_list("TRUSTED_PROXIES", [])
SESSION_COOKIE_HTTPONLY = True
# No page of the platform is meant to be shown inside a frame.
X_FRAME_OPTIONS = "DENY"
# The Content-Security-Policy of every HTML page (cloudpacs.middleware): scripts and styles
# only from the site's own files, never inline; style attributes, without which the
# charts' tooltips do not show; blob: images, the viewer's tool cursors (SVGs it draws);
# data: images, Cornerstone's decoder of baseline JPEG colour frames (YBR_FULL_422, as
# ultrasound sends), which hands each frame to an <img> as a data: URL;
# 'wasm-unsafe-eval' (compiling WebAssembly, not JavaScript eval) for the viewer's image
# decoders should they run in the page rather than in their worker.
# docs/operations.md, "Content-Security-Policy".
CONTENT_SECURITY_POLICY = {
    "default-src": ["'self'"],
    "script-src": ["'self'", "'wasm-unsafe-eval'"],
    "style-src": ["'self'"],
    "style-src-attr": ["'unsafe-inline'"],
    "img-src": ["'self'", "blob:", "data:"],
    "worker-src": ["'self'"],
    "connect-src": ["'self'"],
    "object-src": ["'none'"],
    "base-uri": ["'self'"],
    "form-action": ["'self'"],
    "frame-ancestors": ["'none'"],
}
CSP_REPORT_ONLY = env_bool("CSP_REPORT_ONLY", False)

LOG_LEVEL = env_choice("LOG_LEVEL", "INFO", {"DEBUG", "INFO", "WARNING", "ERROR"})
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        "yunying": {"level": LOG_LEVEL},
        "dicomnode": {"level": LOG_LEVEL},
        "cloudpacs": {"level": LOG_LEVEL},
        "consults": {"level": LOG_LEVEL},
        "pynetdicom": {"level": "WARNING"},
    },
}

# The Hanyin demo: where the published figures live, and whether demo logins are shown.
DEMO_MODE = env_bool("DEMO_MODE", True)

# Reading time limits in minutes, by priority and exam kind; "CT_HEAD" is head CT (stroke,
# trauma), which Chinese practice reads faster than other CT. Urgent (加急) sits between
# emergency and routine: DR 1 h, CT 2 h, head CT 1 h.
# Any cell can be changed from the environment, e.g. CONSULT_TIME_LIMITS=routine.CT=180.
CONSULT_TIME_LIMITS = env_table(
    "CONSULT_TIME_LIMITS",
    {
        "emergency": {"DR": 30, "CT": 60, "CT_HEAD": 30},
        "urgent": {"DR": 60, "CT": 120, "CT_HEAD": 60},
        "routine": {"DR": 120, "CT": 240, "CT_HEAD": 240},
    },
    rows={"emergency", "urgent", "routine"},
    columns={"DR", "CT", "CT_HEAD"},
)
# The night of the radiologists' workload report, local time (TIME_ZONE): a report signed
# from the start (inclusive) to the end (exclusive) on a weekday is a night's work.
REPORT_NIGHT_HOURS = env_hours("REPORT_NIGHT_HOURS", "18:00-08:00")
# A consult is flagged once this share of its limit has passed, and escalated past it.
CONSULT_NEAR_LIMIT_FRACTION = env_float("CONSULT_NEAR_LIMIT_FRACTION", 0.8, minimum=0.0)
# Arrived consults go to the least loaded qualified radiologist on duty; off, they wait
# in the shared worklist to be claimed.
CONSULT_AUTO_ASSIGN = env_bool("CONSULT_AUTO_ASSIGN", True)
# A critical finding (危急值) not acknowledged by the township within this escalates.
CRITICAL_ACK_MINUTES = env_int("CRITICAL_ACK_MINUTES", 15, minimum=1)
# A TrueType CJK font that reportlab can embed in the PDF report (fonts-wqy-zenhei).
REPORT_FONT_PATH = env_path("REPORT_FONT_PATH", Path("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc"))
# Sending signed reports back to a township's archive (DICOM Encapsulated PDF): the
# association timeout in seconds, the first retry delay (doubled after each failure, at
# most an hour), and the attempts before the send-back is marked failed.
REPORT_DELIVERY_TIMEOUT = env_int("REPORT_DELIVERY_TIMEOUT", 15, minimum=1)
REPORT_DELIVERY_RETRY_SECONDS = env_int("REPORT_DELIVERY_RETRY_SECONDS", 60, minimum=1)
REPORT_DELIVERY_MAX_ATTEMPTS = env_int("REPORT_DELIVERY_MAX_ATTEMPTS", 8, minimum=1)
# Alert e-mails (critical findings, escalations) go through an outbox too: the first retry
# delay in seconds (doubled after each failure, at most ten minutes), and the attempts
# before the alert is marked failed.
MAIL_RETRY_SECONDS = env_int("MAIL_RETRY_SECONDS", 30, minimum=1)
MAIL_MAX_ATTEMPTS = env_int("MAIL_MAX_ATTEMPTS", 12, minimum=1)
# The per-minute check of time limits, rosters and critical findings, and the outboxes of
# reports and alert e-mails, when Celery beat runs (or `manage.py ticker` without a broker).
CELERY_BEAT_SCHEDULE = {
    # The receiver asks for the stability sweep every second itself; this one is for a
    # receiver started with --no-sweep-timer, and catches anything a broker outage left.
    "consults-sweep-stable-studies": {"task": "consults.tasks.sweep_stable_studies", "schedule": 10.0},
    "consults-check-deadlines": {"task": "consults.tasks.check_consult_deadlines", "schedule": 60.0},
    "consults-deliver-reports": {"task": "consults.tasks.deliver_due_reports", "schedule": 30.0},
    "consults-send-notifications": {"task": "consults.tasks.send_due_notifications", "schedule": 10.0},
    "billing-record-savings": {"task": "billing.tasks.record_savings_for_signed_consults", "schedule": 60.0},
    # The month before's printed report, on the 1st (billing.monthly.make_due_report).
    "billing-monthly-report": {"task": "billing.tasks.make_monthly_report", "schedule": 900.0},
}
