"""The administrators' status page: each part's state from its heartbeat, the broker and
the database as they answer, the image store's free space, and the oldest row of each
outbox not yet sent; and `manage.py alive`, docker-compose's health check."""

from __future__ import annotations

import re
import shutil
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from cloudpacs import heartbeat
from cloudpacs.models import Heartbeat
from consults import workflow
from consults.models import Notification, ReportDelivery
from facilities.models import ExamKind, User
from tests.factories import make_consult, make_user


def parts_on(page: str) -> dict[str, str]:
    """{part: up | down | never} as the page's table says."""
    return dict(re.findall(r'<tr data-part="(\w+)" data-state="(\w+)"', page))


def test_the_page_shows_each_part_from_its_heartbeat(administrator_client, settings):
    settings.CELERY_BROKER_URL = None
    now = timezone.now()
    heartbeat.beat("web", now=now)
    heartbeat.beat("dicomnode", "CLOUDPACS 127.0.0.1:11112", now=now - timedelta(seconds=5))
    # The ticker last beat a minute ago: three intervals of 10 s have passed.
    heartbeat.beat("ticker", now=now - timedelta(minutes=1))
    heartbeat.beat("sweep", "12 sweeps", now=now)

    page = administrator_client.get("/status/").content.decode()

    assert parts_on(page) == {"web": "up", "dicomnode": "up", "ticker": "down", "sweep": "up"}
    assert "CLOUDPACS 127.0.0.1:11112" in page
    assert "12 sweeps" in page
    assert 'data-problems="ticker"' in page
    assert "未配置（任务在进程内执行）" in page
    assert re.search(r'id="database">\s*正常（(sqlite3|postgresql)，', page)


def test_a_part_never_heard_from_is_shown_and_with_a_broker_the_worker_and_beat_are_expected(
    administrator_client, settings, private_redis
):
    settings.CELERY_BROKER_URL = private_redis.url
    heartbeat.beat("web")
    page = administrator_client.get("/status/").content.decode()
    assert parts_on(page) == {"web": "up", "dicomnode": "never", "worker": "never", "beat": "never"}
    assert 'data-ok="yes"' in page


def test_a_frozen_broker_is_shown_as_unreachable_within_its_timeout(administrator_client, settings, private_redis):
    settings.CELERY_BROKER_URL = private_redis.url
    settings.BROKER_TIMEOUT = 1.0
    private_redis.freeze()
    started = time.monotonic()
    page = administrator_client.get("/status/").content.decode()
    assert time.monotonic() - started < 3.0
    assert 'data-ok="no"' in page
    assert "broker" in re.search(r'data-problems="([^"]*)"', page).group(1)


def test_a_restarted_part_takes_its_row_over_with_its_new_pid(db):
    heartbeat.beat("dicomnode")
    Heartbeat.objects.filter(part="dicomnode").update(pid=1, started_at=timezone.now() - timedelta(hours=1))
    heartbeat.beat("dicomnode")
    row = Heartbeat.objects.get(part="dicomnode")
    assert row.pid != 1
    assert Heartbeat.objects.count() == 1


def test_a_starting_part_forgets_hosts_not_heard_from_for_a_day(db):
    Heartbeat.objects.create(
        part="worker",
        host="old-container",
        pid=7,
        started_at=timezone.now() - timedelta(days=3),
        at=timezone.now() - timedelta(days=2),
    )
    heartbeat.beat("worker")
    assert Heartbeat.objects.filter(host="old-container").exists()
    heartbeat.beat("worker", forget=True)  # a HeartbeatThread's first beat
    assert list(Heartbeat.objects.values_list("host", flat=True)) == [heartbeat.host_name()]


def test_the_image_store_free_space_is_shown_and_warned_about_when_low(administrator_client, settings):
    Path(settings.STORAGE_ROOT).mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(settings.STORAGE_ROOT).free
    page = administrator_client.get("/status/").content.decode()
    shown = int(re.search(r'data-free="(\d+)" data-low="no"', page).group(1))
    assert abs(shown - free) < 1024**3
    settings.STORAGE_FREE_WARNING = 1.0
    page = administrator_client.get("/status/").content.decode()
    assert 'data-low="yes"' in page and "空间不足" in page


def test_the_oldest_unsent_row_of_each_outbox_is_shown(
    administrator_client, township, ct_modality, django_capture_on_commit_callbacks
):
    township.alert_email = "yizhen@xuanwo.test"
    township.save()
    li = make_user(User.Role.RADIOLOGIST, None, username="li")
    consult = make_consult(township, kind=ExamKind.CT)
    workflow.claim_consult(consult, li)
    with django_capture_on_commit_callbacks(execute=True):
        workflow.flag_critical(consult, li, "气胸")  # the console backend sends it at once
    older = timezone.now() - timedelta(hours=3)
    waiting = make_consult(township, kind=ExamKind.CT)
    workflow.claim_consult(waiting, li)
    finding = workflow.flag_critical(waiting, li, "血肿")
    Notification.objects.filter(critical_finding=finding).update(
        status="retrying", created_at=older, last_error="ConnectionRefusedError: [Errno 111]"
    )
    ReportDelivery.objects.create(
        consult=consult,
        destination="XUANWO_CT@127.0.0.1:104",
        sop_instance_uid="1.2.3",
        series_instance_uid="1.2.4",
        status="failed",
        next_attempt_at=older,
        created_at=older - timedelta(hours=1),
        last_error="association rejected",
    )

    page = administrator_client.get("/status/").content.decode()

    assert 'data-outbox="notifications" data-waiting="1" data-failed="0"' in page
    assert 'data-outbox="deliveries" data-waiting="0" data-failed="1"' in page
    assert "ConnectionRefusedError" in page and "association rejected" in page
    assert timezone.localtime(older).strftime("%Y-%m-%d %H:%M:%S") in page


def test_only_administrators_open_the_page(technologist_client, radiologist_client, client):
    assert technologist_client.get("/status/").status_code == 403
    assert radiologist_client.get("/status/").status_code == 403
    assert client.get("/status/").status_code == 302


def test_alive_passes_for_a_fresh_heartbeat_of_this_host_and_fails_otherwise(db, capsys):
    with pytest.raises(CommandError, match="no heartbeat yet"):
        call_command("alive", "worker")
    heartbeat.beat("worker")
    call_command("alive", "worker")
    assert "worker on" in capsys.readouterr().out
    Heartbeat.objects.filter(part="worker").update(at=timezone.now() - timedelta(minutes=5))
    with pytest.raises(CommandError, match="last heartbeat 300 s ago"):
        call_command("alive", "worker")


def test_the_sweep_beats_from_its_own_loop_so_a_stuck_sweep_stops_its_heartbeat(
    transactional_db, settings, monkeypatch
):
    # A heartbeat thread beside a loop stuck in the database would go on beating; the
    # stability sweep's beats come from between its ticks.
    from dicomnode import stability

    settings.CELERY_BROKER_URL = None
    settings.HEARTBEAT_SECONDS = 0.05
    stuck = threading.Event()
    release = threading.Event()

    def sweep_that_hangs(task: object) -> None:
        stuck.set()
        release.wait(10)

    monkeypatch.setattr(stability, "has_stable_studies", lambda now, seconds: True)
    monkeypatch.setattr(stability, "send", sweep_that_hangs)
    timer = stability.StabilityTimer(0.01, heartbeat_part="sweep")
    worker = threading.Thread(target=timer.run)
    worker.start()
    try:
        assert stuck.wait(10)
        first = Heartbeat.objects.get(part="sweep").at
        time.sleep(0.3)
        assert Heartbeat.objects.get(part="sweep").at == first
        release.set()
        deadline = time.monotonic() + 10
        while Heartbeat.objects.get(part="sweep").at == first and time.monotonic() < deadline:
            time.sleep(0.05)
        assert Heartbeat.objects.get(part="sweep").at > first
        assert Heartbeat.objects.get(part="sweep").detail.endswith("sweeps")
    finally:
        release.set()
        timer.request_stop()
        worker.join(10)
