"""Faults, with real processes: the receiver killed in the middle of a push, the broker
down while a study arrives, the broker stopped and frozen under the reading workflow's
pages, and PostgreSQL restarted under the running receiver.

Each test runs `manage.py dicomnode` as a subprocess on the test database (or, for the
PostgreSQL restart, on a private cluster it creates in a temporary directory), and sends
with pynetdicom from this process. Redis and PostgreSQL are private instances started
here on free ports, never the machine's shared ones, so that stopping them hurts no one.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from glob import glob
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import Client
from django.utils.timezone import now as timezone_now
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE

from cloudpacs import services
from cloudpacs.celery import app
from cloudpacs.models import Instance, Series, Study, UnsyncedFile
from consults.models import Consult, CriticalFinding, Notification, ReportDelivery
from dicomnode.queryretrieve import OPENED
from facilities.models import ExamKind, User
from tests.factories import make_consult, make_dataset, make_shift, make_study, make_user
from tests.processes import SmtpServer, free_port, shared_database_url, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

BASE_DIR = Path(__file__).resolve().parent.parent
SUCCESS = 0x0000
INDEX_UNAVAILABLE = 0xA701


# ---------------------------------------------------------------- helpers


def base_env(database_url: str, storage_root: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "STORAGE_ROOT": str(storage_root),
        "DICOM_AE_TITLE": "CLOUDPACS",
        "CELERY_BROKER_URL": "",
        "LOG_LEVEL": "INFO",
        # One process, the one these tests stop and kill in the middle of a store (the
        # worker processes' faults are tests/test_dicomnode_processes.py's).
        "DICOM_RECEIVER_PROCESSES": "1",
        **extra,
    }


class Receiver:
    """`manage.py dicomnode` as its own process; its log (stderr) goes to a file."""

    def __init__(self, env: dict[str, str], log_path: Path, *args: str, program: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.log_path = log_path
        self._log = log_path.open("a")
        program = program or (sys.executable, "manage.py")
        self.process = subprocess.Popen(
            [*program, "dicomnode", "--host", "127.0.0.1", "--port", str(self.port), *args],
            cwd=BASE_DIR,
            env=env,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert "listening on 127.0.0.1:" in line, line + self.log()

    def log(self) -> str:
        return self.log_path.read_text()

    def freeze_in_a_store(self, storage_root: Path) -> bool:
        """Stop the process while it is storing an instance (a file is staged in
        `.incoming/`), so that the kill that follows lands between file and index."""
        if not leftovers(storage_root):
            return False
        self.process.send_signal(signal.SIGSTOP)
        # The signal is delivered, not taken, when send_signal returns: until every
        # thread has stopped, the store under way may still finish and discard its file.
        assert wait_for(lambda: all_threads_stopped(self.process.pid), 10, interval=0.001)
        if leftovers(storage_root):
            return True
        self.process.send_signal(signal.SIGCONT)
        return False

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)
        self._log.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.communicate()
        self._log.close()


def all_threads_stopped(pid: int) -> bool:
    """Whether every thread of the process is stopped (state T in /proc)."""
    states = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            # The state follows the command's name, which is in parentheses.
            states.append((task / "stat").read_text().rsplit(")", 1)[1].split()[0])
    return bool(states) and all(state in ("T", "t") for state in states)


def client(calling: str) -> AE:
    ae = AE(ae_title=calling)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    return ae


def push(
    port: int, calling: str, datasets: list[Dataset], answered: Callable[[str, int], None] | None = None
) -> dict[str, int | None]:
    """Send over one association; the status of each instance, None when no answer came
    (the association is gone, and the rest are not sent)."""
    statuses: dict[str, int | None] = {ds.SOPInstanceUID: None for ds in datasets}
    assoc = client(calling).associate("127.0.0.1", port, ae_title="CLOUDPACS", evt_handlers=OPENED)
    if not assoc.is_established:
        return statuses
    try:
        for ds in datasets:
            response = assoc.send_c_store(ds)
            status = response.get("Status")
            if status is None:
                break
            statuses[ds.SOPInstanceUID] = int(status)
            if answered is not None:
                answered(ds.SOPInstanceUID, int(status))
    finally:
        if assoc.is_established:
            assoc.release()
    return statuses


def series_of(count: int, **fields: Any) -> list[Dataset]:
    study_uid, series_uid = generate_uid(), generate_uid()
    return [
        make_dataset(study_uid=study_uid, series_uid=series_uid, instance_number=n, rows=32, columns=32, **fields)
        for n in range(1, count + 1)
    ]


def files_in_store(storage_root: Path) -> set[str]:
    """Keys of the files in the image store, outside its working directories."""
    return {
        path.relative_to(storage_root).as_posix()
        for path in storage_root.rglob("*.dcm")
        if not path.relative_to(storage_root).parts[0].startswith(".")
    }


def leftovers(storage_root: Path) -> list[Path]:
    incoming = storage_root / ".incoming"
    return sorted(incoming.iterdir()) if incoming.is_dir() else []


# ---------------------------------------------------------------- kill -9 in a push


def test_a_receiver_killed_mid_push_keeps_what_it_acknowledged_and_stores_a_resend_exactly_once(ct_modality, tmp_path):
    storage_root = Path(settings.STORAGE_ROOT)
    env = base_env(shared_database_url(), storage_root)
    datasets = series_of(100)
    study_uid = datasets[0].StudyInstanceUID
    first = Receiver(env, tmp_path / "receiver.log", "--no-sweep-timer")
    acknowledged: list[str] = []
    pushed: dict[str, dict[str, int | None]] = {}

    def record(uid: str, status: int) -> None:
        if status == SUCCESS:
            acknowledged.append(uid)

    sender = threading.Thread(target=lambda: pushed.update(first=push(first.port, "XUANWO_CT", datasets, record)))
    sender.start()
    try:
        assert wait_for(lambda: len(acknowledged) >= 30), first.log()
        assert wait_for(lambda: first.freeze_in_a_store(storage_root), 60, interval=0.002), first.log()
    finally:
        first.kill()
        sender.join(timeout=120)
    assert not sender.is_alive()
    # The kill came in the middle of a store: it left a file for the start-up sweep, and
    # some instances were never answered.
    assert leftovers(storage_root) != []
    assert 30 <= len(acknowledged) < 100
    assert None in pushed["first"].values()
    # Every instance answered with Success is durable: indexed, with its file.
    indexed = dict(
        Instance.objects.filter(sop_instance_uid__in=acknowledged).values_list("sop_instance_uid", "storage_key")
    )
    assert set(indexed) == set(acknowledged)
    assert all((storage_root / key).is_file() for key in indexed.values())

    second = Receiver(env, tmp_path / "receiver.log", "--no-sweep-timer")
    try:
        # The start-up sweep left no orphan: every file in the store is indexed, none waits.
        assert leftovers(storage_root) == []
        assert files_in_store(storage_root) <= set(Instance.objects.values_list("storage_key", flat=True))

        resent = push(second.port, "XUANWO_CT", datasets)
    finally:
        second.stop()
    assert set(resent.values()) == {SUCCESS}

    instances = Instance.objects.filter(series__study__study_uid=study_uid)
    assert sorted(instances.values_list("sop_instance_uid", flat=True)) == sorted(ds.SOPInstanceUID for ds in datasets)
    study = Study.objects.get(study_uid=study_uid)
    assert services.study_instances(study) == 100
    assert services.series_instances(Series.objects.get(study=study)) == 100
    # One file per row and one row per file, each file as long as its row says.
    keys = dict(instances.values_list("storage_key", "size"))
    assert files_in_store(storage_root) == set(keys)
    assert all((storage_root / key).stat().st_size == size for key, size in keys.items())
    assert leftovers(storage_root) == []


# ---------------------------------------------------------------- a power cut between index and file


@pytest.mark.parametrize("lost", ["truncated", "missing"])
def test_a_row_committed_before_its_file_was_lost_is_taken_back_at_the_next_start_and_never_acknowledged(
    ct_modality, tmp_path, lost
):
    """The index row of an instance of a known series commits while its file's fsync runs
    (cloudpacs.services._store); here the file is lost right after the commit (emptied, as
    ext4 leaves a file whose data never reached the disk, or its name gone) and the receiver
    killed before it answers."""
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("the row and the file's fsync overlap on PostgreSQL only")
    storage_root = Path(settings.STORAGE_ROOT)
    env = base_env(shared_database_url(), storage_root)
    datasets = series_of(30)
    study_uid = datasets[0].StudyInstanceUID
    record = tmp_path / "crashed"
    crashing = (sys.executable, "-m", "tests.crashing_receiver", lost, "10", str(record))
    first = Receiver(env, tmp_path / "receiver.log", "--no-sweep-timer", program=crashing)
    try:
        pushed = push(first.port, "XUANWO_CT", datasets)
        assert first.process.wait(timeout=60) == -signal.SIGKILL
    finally:
        first.kill()
    crashed = record.read_text()
    # The first instance made the series; the tenth after it was lost with its row committed.
    assert crashed == datasets[10].SOPInstanceUID
    assert pushed[crashed] is None
    acknowledged = [uid for uid, status in pushed.items() if status == SUCCESS]
    assert acknowledged == [ds.SOPInstanceUID for ds in datasets[:10]]
    row = Instance.objects.get(sop_instance_uid=crashed)
    assert UnsyncedFile.objects.filter(instance=row).exists()

    second = Receiver(env, tmp_path / "receiver.log", "--no-sweep-timer")
    try:
        # The start took the row back and removed what was left of its file.
        assert not Instance.objects.filter(sop_instance_uid=crashed).exists()
        assert not (storage_root / row.storage_key).exists()
        assert not UnsyncedFile.objects.exists()
        assert leftovers(storage_root) == []
        study = Study.objects.get(study_uid=study_uid)
        assert services.study_instances(study) == 10
        assert services.series_instances(Series.objects.get(study=study)) == 10
        assert "taken back" in second.log()

        resent = push(second.port, "XUANWO_CT", datasets)
    finally:
        second.stop()
    assert set(resent.values()) == {SUCCESS}
    instances = Instance.objects.filter(series__study__study_uid=study_uid)
    keys = dict(instances.values_list("storage_key", "size"))
    assert len(keys) == 30
    assert services.study_instances(Study.objects.get(study_uid=study_uid)) == 30
    assert files_in_store(storage_root) == set(keys)
    assert all((storage_root / key).stat().st_size == size for key, size in keys.items())


# ---------------------------------------------------------------- Redis down


@pytest.fixture
def worker_on(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], Path]]:
    """Start a real Celery worker with the given environment; returns its log's path."""
    started: list[tuple[subprocess.Popen[bytes], Any]] = []

    def start(env: dict[str, str]) -> Path:
        log_path = tmp_path / "worker.log"
        log = log_path.open("w")
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "cloudpacs", "worker", "--pool", "solo", "-l", "INFO"],
            cwd=BASE_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        started.append((process, log))
        assert wait_for(lambda: " ready." in log_path.read_text(), 90), log_path.read_text()
        return log_path

    yield start
    for process, log in started:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def test_a_study_that_arrives_while_redis_is_down_is_stored_and_gets_one_consult_once_redis_is_back(
    ct_modality, tmp_path, private_redis, worker_on
):
    storage_root = Path(settings.STORAGE_ROOT)
    env = base_env(shared_database_url(), storage_root, CELERY_BROKER_URL=private_redis.url, STUDY_STABLE_SECONDS="1")
    worker_log = worker_on(env)
    receiver = Receiver(env, tmp_path / "receiver.log")
    try:
        first, second = series_of(5), series_of(3)
        uids = [first[0].StudyInstanceUID, second[0].StudyInstanceUID]

        def sweeps_failed() -> int:
            return receiver.log().count("study stability sweep failed")

        # Frozen: Redis accepts connections and answers nothing.
        private_redis.freeze()
        assert set(push(receiver.port, "XUANWO_CT", first).values()) == {SUCCESS}, receiver.log()
        # The first study is stable; the sweep's publish times out instead of blocking.
        assert wait_for(lambda: sweeps_failed() >= 1, 60), receiver.log()
        # Down: connections are refused.
        private_redis.kill()
        # Stores go on while the sweep fails, and the sweep keeps trying.
        assert set(push(receiver.port, "XUANWO_CT", second).values()) == {SUCCESS}, receiver.log()
        failed = sweeps_failed()
        assert wait_for(lambda: sweeps_failed() >= failed + 2, 60), receiver.log()
        assert receiver.process.poll() is None
        assert Instance.objects.filter(series__study__study_uid__in=uids).count() == 8
        # Unclaimed: the studies wait for the next sweep that reaches a worker.
        assert set(Study.objects.filter(study_uid__in=uids).values_list("status", flat=True)) == {
            Study.Status.RECEIVING
        }
        assert not Consult.objects.filter(study__study_uid__in=uids).exists()

        private_redis.start()

        assert wait_for(lambda: Consult.objects.filter(study__study_uid__in=uids).count() == 2, 120), (
            receiver.log() + worker_log.read_text()
        )
        assert set(push(receiver.port, "XUANWO_CT", series_of(2)).values()) == {SUCCESS}
    finally:
        receiver.stop()
    for uid in uids:
        assert Consult.objects.filter(study__study_uid=uid).count() == 1
        assert Study.objects.get(study_uid=uid).status == Study.Status.ARRIVED
    assert "sweep_stable_studies" in worker_log.read_text()


# ---------------------------------------------------------------- Redis down under the pages


def start_logged(argv: list[str], env: dict[str, str], log_path: Path, started: list[Any]) -> Path:
    log = log_path.open("w")
    process = subprocess.Popen(argv, cwd=BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT)
    started.append((process, log))
    return log_path


NOTIFICATIONS_TASK = "consults.tasks.send_due_notifications"


def alert_runs(worker_log: Path, what: str) -> int:
    """How many runs of the alerts' outbox (beat's, every 10 s) the worker's log says it
    has `what` ("received", "succeeded")."""
    return len(re.findall(rf"Task {re.escape(NOTIFICATIONS_TASK)}\[[^\]]+\] {what}", worker_log.read_text()))


def timed_post(client: Client, url: str, data: dict[str, str]) -> tuple[int, float]:
    started = time.monotonic()
    response = client.post(url, data)
    return response.status_code, time.monotonic() - started


def test_with_redis_frozen_then_stopped_the_reading_pages_answer_and_everything_is_sent_after_recovery(
    township, ct_modality, technologist, tmp_path, private_redis, monkeypatch
):
    """A critical finding flagged, a report signed and a consult requested, each once with
    Redis frozen (it accepts connections and answers nothing) and once with it stopped: every
    page answers its redirect within the broker timeout, nothing saved is lost, and once
    Redis is back the real worker and beat send each alert and each report exactly once and
    the per-minute check assigns the requested consults."""
    from tests.test_consult_pdf import Archive

    smtp = SmtpServer()
    smtp.start()
    archive = Archive()
    archive.start()
    township.alert_email = "yizhen@xuanwo.test"
    township.save()
    ct_modality.host, ct_modality.port = "127.0.0.1", archive.port
    ct_modality.save()
    li = make_user(User.Role.RADIOLOGIST, None, username="li", display_name="李医生", email="li@county.test")
    make_shift(li, timezone_now() - timedelta(hours=1))
    held = {}
    requested = {}
    for fault in ("frozen", "stopped"):
        consult = make_consult(township, make_study(township, ct_modality), kind=ExamKind.CT)
        Consult.objects.filter(pk=consult.pk).update(
            status=Consult.Status.OPENED, radiologist=li, assigned_at=consult.arrived_at, opened_at=consult.arrived_at
        )
        held[fault] = consult
        requested[fault] = make_study(township, ct_modality)

    env = base_env(
        shared_database_url(),
        Path(settings.STORAGE_ROOT),
        CELERY_BROKER_URL=private_redis.url,
        EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
        EMAIL_HOST="127.0.0.1",
        EMAIL_PORT=str(smtp.port),
    )
    # This process is the web server: it queues to the private broker.
    monkeypatch.setattr(settings, "CELERY_TASK_ALWAYS_EAGER", False)
    monkeypatch.setitem(app.conf, "task_always_eager", False)
    monkeypatch.setitem(app.conf, "broker_url", private_redis.url)
    # Celery reads CELERY_BROKER_URL from the environment before its configuration (CI sets it).
    monkeypatch.setenv("CELERY_BROKER_URL", private_redis.url)
    started: list[Any] = []
    celery = [sys.executable, "-m", "celery", "-A", "cloudpacs"]
    worker_log = start_logged([*celery, "worker", "--pool", "solo", "-l", "INFO"], env, tmp_path / "w.log", started)
    beat_log = start_logged(
        [*celery, "beat", "-l", "INFO", "--schedule", str(tmp_path / "beat-schedule")], env, tmp_path / "b.log", started
    )
    reader, township_tech = Client(), Client()
    reader.force_login(li)
    township_tech.force_login(technologist)
    answers: dict[str, list[tuple[int, float]]] = {}
    try:
        assert wait_for(lambda: " ready." in worker_log.read_text(), 90), worker_log.read_text()
        # A first request of each kind, so the times below are the broker's and not warm-up.
        assert reader.get(f"/reading/{held['frozen'].uuid}/").status_code == 200
        assert township_tech.get(f"/facilities/{township.uuid}/").status_code == 200
        for fault, break_redis in (("frozen", private_redis.freeze), ("stopped", private_redis.kill)):
            break_redis()
            page = f"/reading/{held[fault].uuid}"
            answers[fault] = [
                timed_post(reader, f"{page}/critical/", {"description": f"气胸（{fault}）"}),
                timed_post(
                    reader,
                    f"{page}/report/",
                    {"action": "sign", "findings": "左肺压缩约 60%。", "impression": "左侧气胸。"},
                ),
                timed_post(township_tech, f"/studies/{requested[fault].study_uid}/consult/", {"priority": "urgent"}),
            ]
        private_redis.start()

        def all_sent() -> bool:
            return (
                len(smtp.mailbox.envelopes) >= 2
                and len(archive.received) >= 2
                and Consult.objects.filter(study__in=requested.values(), radiologist=li).count() == 2
            )

        assert wait_for(all_sent, 180, interval=0.5), worker_log.read_text() + beat_log.read_text()
        # One more run of the alerts' outbox after everything was sent, so that nothing goes
        # twice: the worker (one at a time, in order) finishes a run it received after now.
        received = alert_runs(worker_log, "received")
        assert wait_for(lambda: alert_runs(worker_log, "succeeded") > received, 60, interval=0.2), (
            worker_log.read_text() + beat_log.read_text()
        )
    finally:
        for process, log in started:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            log.close()
        archive.stop()
        smtp.stop()

    # No 500, and no page waited on the broker for longer than its timeout allows.
    for fault, replies in answers.items():
        assert [status for status, _ in replies] == [302, 302, 302], (fault, replies)
        assert max(seconds for _, seconds in replies) < settings.BROKER_TIMEOUT + 2, (fault, replies)
    # Nothing lost: each finding, report and request saved; each sent exactly once.
    assert CriticalFinding.objects.filter(consult__in=held.values(), emailed_at__isnull=False).count() == 2
    assert smtp.recipients() == [["yizhen@xuanwo.test"], ["yizhen@xuanwo.test"]]
    assert set(Notification.objects.values_list("status", "attempts")) == {("sent", 1)}
    assert sorted(ds.StudyInstanceUID for ds in archive.received) == sorted(c.study.study_uid for c in held.values())
    assert set(ReportDelivery.objects.values_list("status", flat=True)) == {ReportDelivery.Status.SENT}
    assert set(Consult.objects.filter(pk__in=[c.pk for c in held.values()]).values_list("status", flat=True)) == {
        Consult.Status.DELIVERED
    }
    assert Consult.objects.filter(study__in=requested.values(), status=Consult.Status.ASSIGNED).count() == 2
    assert "send_due_notifications" in worker_log.read_text()


# ---------------------------------------------------------------- PostgreSQL restarted


def postgres_bin() -> Path | None:
    found = sorted(glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PrivateCluster:
    """A PostgreSQL cluster of its own in a temporary directory, on a free port. As root,
    its commands run as the postgres user (initdb refuses root)."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="yunying-pg-"))
        self.data = self.directory / "data"
        self.as_root = os.geteuid() == 0
        if self.as_root:
            shutil.chown(self.directory, user="postgres")
        self.run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")

    def run(self, program: str, *args: str) -> None:
        command = [str(self.bindir / program), *args]
        if self.as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        self.run("pg_ctl", "-D", str(self.data), "-l", str(self.directory / "log"), "-w", "-o", options, "start")

    def stop(self) -> None:
        # Fast: open sessions are ended at once, as in a restart for maintenance.
        self.run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def url(self, database: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def query(self, database: str, sql: str) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True) as conn:
            cursor = conn.execute(sql)  # type: ignore[arg-type]
            return cursor.fetchall() if cursor.description else []

    def remove(self) -> None:
        with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
            self.run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture
def private_postgres() -> Iterator[PrivateCluster]:
    bindir = postgres_bin()
    if bindir is None or not (bindir / "pg_ctl").exists():
        pytest.skip("needs the PostgreSQL server binaries (initdb, pg_ctl): apt-get install postgresql")
    cluster = PrivateCluster(bindir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


SEED = """
from django.core.management import call_command
call_command("migrate", verbosity=0)
from facilities.models import ExamKind, Facility, Modality
f = Facility.objects.create(code="XUANWO", name="漩涡镇中心卫生院", short_name="漩涡", pinyin="Xuanwo",
    kind=Facility.Kind.TOWNSHIP_CENTRE, level=Facility.Level.FIRST)
Modality.objects.create(facility=f, kind=ExamKind.CT, ae_title="XUANWO_CT")
"""


def test_the_receiver_answers_a_failure_while_postgresql_restarts_and_reconnects_after(tmp_path, private_postgres):
    cluster = private_postgres
    cluster.query("postgres", "CREATE DATABASE yunying_faults")
    storage_root = tmp_path / "store"
    env = base_env(cluster.url("yunying_faults"), storage_root)
    subprocess.run([sys.executable, "manage.py", "shell", "-c", SEED], cwd=BASE_DIR, env=env, check=True, timeout=300)
    receiver = Receiver(env, tmp_path / "receiver.log", "--no-sweep-timer")
    first, during, after, next_one = series_of(4)
    try:
        assoc = client("XUANWO_CT").associate("127.0.0.1", receiver.port, ae_title="CLOUDPACS", evt_handlers=OPENED)
        assert assoc.is_established
        assert assoc.send_c_store(first).Status == SUCCESS

        cluster.stop()

        # In the open association: a failure status the sender can retry on, not a hang.
        assert assoc.send_c_store(during).Status == INDEX_UNAVAILABLE
        # A new association cannot be checked against the registered modalities: refused.
        refused = client("XUANWO_CT").associate("127.0.0.1", receiver.port, ae_title="CLOUDPACS")
        assert not refused.is_established

        cluster.start()

        # The same association reconnects, and so does the next one.
        assert assoc.send_c_store(during).Status == SUCCESS
        assoc.release()
        assert push(receiver.port, "XUANWO_CT", [after, next_one]) == {
            after.SOPInstanceUID: SUCCESS,
            next_one.SOPInstanceUID: SUCCESS,
        }
        assert receiver.process.poll() is None
    finally:
        receiver.stop()
    rows = cluster.query("yunying_faults", "SELECT sop_instance_uid, storage_key, size FROM cloudpacs_instance")
    assert sorted(uid for uid, _, _ in rows) == sorted(ds.SOPInstanceUID for ds in (first, during, after, next_one))
    # Nothing half-indexed: the failed attempt left no file and no row; every row has its file.
    assert files_in_store(storage_root) == {key for _, key, _ in rows}
    assert all((storage_root / key).stat().st_size == size for _, key, size in rows)
    assert leftovers(storage_root) == []
    # The study's stored counter and its instances not folded yet (cloudpacs.counts).
    counted = (
        "SELECT s.number_of_instances + (SELECT count(*) FROM cloudpacs_instance i JOIN cloudpacs_series r"
        " ON i.series_id = r.id WHERE r.study_id = s.id AND i.id > r.counted_through) FROM cloudpacs_study s"
    )
    assert cluster.query("yunying_faults", counted) == [(4,)]
    assert "index unavailable" in receiver.log()
