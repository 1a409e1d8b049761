"""Celery tasks of the consults app: thin wrappers around services. The only module of
the app that imports all the others; the workflow and the services hand work to these
tasks through consults.handoff, which the end of this module fills."""

from __future__ import annotations

import time

from celery import shared_task
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from cloudpacs.celery import WorkerOnlyTask
from cloudpacs.publish import publish_on_commit
from cloudpacs.services import claim_stable_studies, has_stable_studies, store_study_metadata
from consults import delivery, handoff, notifications, workflow
from consults.models import Consult
from consults.services import open_consult_for_study

# Studies claimed, and their consults opened, per transaction; and per run of the sweep.
# Short transactions: a C-STORE's index transaction never waits long behind one (on
# SQLite, the one writer; on PostgreSQL, two sweeps claiming the same rows).
SWEEP_BATCH = 10
SWEEP_LIMIT = 200
# On SQLite a writer waiting for the lock polls, sleeping up to 100 ms between tries (its
# busy handler), so back-to-back write transactions can keep a C-STORE out for seconds:
# the sweep leaves the lock free this long between batches.
SQLITE_PAUSE = 0.1


@shared_task(ignore_result=True)
def sweep_stable_studies() -> list[int]:
    """Hand every study that has become stable over to the readers, one consult each
    (none for a kind the county does not read remotely), then store the WADO-RS metadata
    of its instances: in batches of SWEEP_BATCH studies, at most SWEEP_LIMIT a run (the
    next run, a second later, takes the rest).

    A batch's claim and its consults commit together, so a crash between them cannot
    leave a study arrived with no consult."""
    consults: list[int] = []
    claimed = 0
    while claimed < SWEEP_LIMIT:
        now = timezone.now()
        if not has_stable_studies(now, settings.STUDY_STABLE_SECONDS):
            break
        with transaction.atomic():
            studies = claim_stable_studies(now, settings.STUDY_STABLE_SECONDS, limit=SWEEP_BATCH)
            # A study of a kind not read remotely opens none: it stays archived and viewable.
            opened = [consult.pk for study in studies if (consult := open_consult_for_study(study)) is not None]
        if not studies:
            break  # another sweep claimed them between the check and the claim
        claimed += len(studies)
        consults += opened
        _pause_for_other_writers()
        # The batch's WADO-RS metadata, after its commit: the consults are open already,
        # and a document not stored here is computed on its first request instead.
        store_study_metadata([study.pk for study in studies])
        _pause_for_other_writers()
    return consults


def _pause_for_other_writers() -> None:
    if connection.vendor == "sqlite":
        time.sleep(SQLITE_PAUSE)


# --- The reading workflow (consults.workflow): thin wrappers taking primary keys, queued
# with transaction.on_commit by the workflow.


@shared_task(ignore_result=True)
def assign_consult(consult_id: int) -> None:

    consult = Consult.objects.filter(pk=consult_id).first()
    # A read first: with nobody on duty for its kind, assigning would be a write
    # transaction that finds no reader, and the sweep queues ten of them per batch; on
    # SQLite each holds the one write lock a C-STORE waits for.
    if consult is not None and workflow.on_duty(timezone.now(), consult.kind).exists():
        workflow.assign_consult(consult)


@shared_task(ignore_result=True)
def check_consult_deadlines() -> None:
    """Every minute (CELERY_BEAT_SCHEDULE): assignment, time limits, critical findings."""

    workflow.check_consult_deadlines()


@shared_task(ignore_result=True)
def send_notification(notification_id: int) -> None:
    """One attempt at one alert e-mail of the outbox (a critical finding, an escalation)."""

    notifications.send(notification_id)


@shared_task(ignore_result=True)
def send_due_notifications() -> None:
    """Periodically (CELERY_BEAT_SCHEDULE, or the ticker without a broker): every alert
    e-mail whose time has come, those whose task never reached a worker included."""

    notifications.send_due()


@shared_task(base=WorkerOnlyTask, ignore_result=True)
def deliver_report(delivery_id: int) -> None:
    """One attempt to send a signed report back to the township's archive (the outbox row).
    Only a worker runs it: without a broker, deliver_due_reports (the ticker's) sends it."""

    delivery.deliver(delivery_id)


@shared_task(ignore_result=True)
def deliver_due_reports() -> None:
    """Periodically (CELERY_BEAT_SCHEDULE, or the ticker without a broker): every outbox row
    whose time has come, first attempts and retries alike."""

    delivery.deliver_due()


# On commit, one bounded attempt that never raises (cloudpacs.publish): what the task is
# about is saved, and the periodic run does it when the broker did not take it.
handoff.slots.assign_consult = lambda pk: publish_on_commit(assign_consult, pk)
handoff.slots.deliver_report = lambda pk: publish_on_commit(deliver_report, pk)
handoff.slots.send_notification = lambda pk: publish_on_commit(send_notification, pk)
