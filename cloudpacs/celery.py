"""The Celery application. Without CELERY_BROKER_URL tasks run eagerly in-process
(settings set task_always_eager), so the embedded default needs no broker."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cloudpacs.settings")

app = Celery("yunying")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
