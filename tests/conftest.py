"""Fixtures shared by the suite: three personas (a township technologist, a county
radiologist, and an outsider from another township), an isolated image store, a small
DICOMweb archive, a private Redis, and the Hanyin demo seeded once for the session."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from facilities.models import ExamKind, Facility, Modality, User
from tests.dicomweb_support import Archive, build_archive
from tests.factories import PASSWORD, make_facility, make_modality, make_user
from tests.processes import RedisServer
from tests.s3_support import MotoS3, use_object_store


@pytest.fixture(scope="session")
def s3_server() -> Iterator[MotoS3]:
    """An S3-compatible server (moto's) on a free loopback port, for the session."""
    server = MotoS3()
    yield server
    server.stop()


@pytest.fixture
def object_store(settings, s3_server: MotoS3) -> str:
    """STORAGE_BACKEND=s3 on a bucket of its own; returns the bucket's name."""
    bucket = f"yunying-{uuid.uuid4().hex[:12]}"
    use_object_store(settings, s3_server.endpoint, bucket)
    return bucket


@pytest.fixture(params=["local", "s3"])
def storage_backend(request) -> str:
    """The test runs once on local disk and once on the object store."""
    if request.param == "s3":
        request.getfixturevalue("object_store")
    return str(request.param)


# Tests that use the seeded demo run last, after every other test, so that the session's
# one seeded transaction (held open from the first of them to the end) is seen by them only.
SEEDED_DEMO = "hanyin"


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """pytest-django has already ordered the tests (database tests, then transactional
    ones, then the rest); move those of the seeded demo to the end, keeping their order."""
    items.sort(key=lambda item: SEEDED_DEMO in getattr(item, "fixturenames", ()))
    for item in items:
        if SEEDED_DEMO in getattr(item, "fixturenames", ()) and (
            {"transactional_db", "live_server"} & set(getattr(item, "fixturenames", ()))
        ):
            raise pytest.UsageError(
                f"{item.nodeid}: the seeded demo lives in a transaction that is never committed; "
                "a transactional test or a live server cannot use it"
            )


@pytest.fixture(scope="session")
def hanyin(django_db_setup, django_db_blocker) -> Iterator[str]:
    """The Hanyin demo (`manage.py seed_hanyin`, with its history), loaded once for the whole
    session inside a transaction that is rolled back at the end, so no other test sees its
    rows; yields what the command printed. Each test that uses it also takes `db` and runs
    in a savepoint of that transaction, so what it writes is undone after it. The tests
    that use it are run last (see `pytest_collection_modifyitems`)."""
    import io

    from django.core.management import call_command
    from django.db import connection, transaction

    out = io.StringIO()
    with django_db_blocker.unblock():
        atomic = transaction.atomic()
        atomic.__enter__()
        try:
            # These tests run last, after transactional tests have emptied every table: the
            # data the migrations load goes back first, as a fresh database has it.
            load_migration_data()
            call_command("seed_hanyin", stdout=out)
            # Fire the deferred foreign-key checks of the seed's rows now, once; left
            # pending, every test's teardown would check them again inside its savepoint.
            connection.check_constraints()
            yield out.getvalue()
        finally:
            transaction.set_rollback(True)
            atomic.__exit__(None, None, None)


@pytest.fixture(autouse=True)
def _isolated_storage(settings, tmp_path: Path) -> None:
    settings.STORAGE_ROOT = tmp_path / "storage"
    settings.LANGUAGE_CODE = "zh-hans"


@pytest.fixture(scope="session", autouse=True)
def _fast_password_hasher() -> None:
    """Hashing each persona's password with the production hasher costs about 0.5 s a user.
    Set for the whole session, before module-scoped fixtures (the seed) create users, so
    every password is hashed and checked with the same hasher."""
    from django.conf import settings as django_settings
    from django.contrib.auth.hashers import get_hashers, get_hashers_by_algorithm

    django_settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    get_hashers.cache_clear()
    get_hashers_by_algorithm.cache_clear()


@pytest.fixture(autouse=True)
def _eager_tasks(request, settings, monkeypatch) -> None:
    """Tasks run in-process unless a test asks for a real worker (celery_worker marker):
    the broker configured by CI is there for those tests, not for every test. Celery reads
    Django's settings once, so its own configuration is set both ways, explicitly."""
    from cloudpacs.celery import app

    eager = request.node.get_closest_marker("celery_worker") is None
    settings.CELERY_TASK_ALWAYS_EAGER = eager
    monkeypatch.setitem(app.conf, "task_always_eager", eager)
    monkeypatch.setitem(app.conf, "task_eager_propagates", True)


@pytest.fixture(autouse=True)
def _body_part_vocabulary(request) -> None:
    """The body-part vocabulary and the report-template library are data that migrations
    load. A transactional test empties every table when it ends, so for each test that uses
    the database they are loaded again (by the migrations' own functions) when missing."""
    uses_db = request.node.get_closest_marker("django_db") is not None or bool(
        {"db", "transactional_db"} & set(request.fixturenames)
    )
    if not uses_db:
        return
    request.getfixturevalue("_django_db_helper")
    load_migration_data()


def load_migration_data() -> None:
    """Put back what data migrations load (the body-part vocabulary, the report-template
    library) where a transactional test's flush took it, with the loaders' own functions."""
    import importlib

    from django.apps import apps

    from cloudpacs.models import BodyPart
    from consults.models import ReportTemplate

    if not BodyPart.objects.exists():
        importlib.import_module("cloudpacs.migrations.0006_body_parts").add_body_parts(apps, None)
    # The report-template library is data of the same kind, loaded the same way.
    from consults import template_library
    from consults.template_library import v1

    if not ReportTemplate.objects.exclude(library_key="").exists():
        template_library.install(ReportTemplate, BodyPart, v1.LIBRARY, v1.VERSION)


@pytest.fixture
def county(db) -> Facility:
    return make_facility("COUNTY", township=False, name="汉阴县人民医院", short_name="县医院", pinyin="Hanyin")


@pytest.fixture
def township(db) -> Facility:
    return make_facility("XUANWO", name="漩涡镇中心卫生院", short_name="漩涡", pinyin="Xuanwo")


@pytest.fixture
def other_township(db) -> Facility:
    return make_facility("PINGLIANG", name="平梁镇卫生院", short_name="平梁", pinyin="Pingliang")


@pytest.fixture
def ct_modality(township: Facility) -> Modality:
    return make_modality(township, ExamKind.CT, "XUANWO_CT", manufacturer="UIH", model_name="uCT 528")


@pytest.fixture
def dr_modality(township: Facility) -> Modality:
    return make_modality(township, ExamKind.DR, "XUANWO_DR")


@pytest.fixture
def technologist(township: Facility) -> User:
    return make_user(User.Role.TECHNOLOGIST, township, username="tech_xuanwo", display_name="漩涡技师")


@pytest.fixture
def outsider(other_township: Facility) -> User:
    return make_user(User.Role.TECHNOLOGIST, other_township, username="tech_pingliang", display_name="平梁技师")


@pytest.fixture
def radiologist(county: Facility) -> User:
    return make_user(User.Role.RADIOLOGIST, county, username="dr_li", display_name="李医生", is_senior=True)


@pytest.fixture
def administrator(county: Facility) -> User:
    return make_user(User.Role.ADMINISTRATOR, county, username="admin_wang", display_name="王管理员")


@pytest.fixture
def archive(township, other_township, ct_modality, dr_modality, tmp_path: Path) -> Archive:
    """A small archive made through the real ingest service (tests/dicomweb_support.py)."""
    return build_archive(township, other_township, ct_modality, dr_modality, tmp_path / "in")


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own on a free port, which the test may freeze or kill."""
    import shutil

    if shutil.which("redis-server") is None:
        pytest.skip("needs redis-server (apt-get install redis-server)")
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def chromium() -> Iterator[Any]:
    """A headless Chromium (Playwright's sync API), closed after the test. Request it after
    the fixtures that write the test's data: while Playwright's event loop runs in this
    thread, Django refuses ORM calls from it."""
    import os

    from playwright.sync_api import sync_playwright

    from tests.browser import BUILT_VIEWER, CHROMIUM, CHROMIUM_ARGS

    assert BUILT_VIEWER.exists(), "the viewer is not built: run scripts/build-viewer.sh"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            env={**os.environ, "LANGUAGE": "zh_CN", "LANG": "zh_CN.UTF-8"},
        )
        try:
            yield browser
        finally:
            browser.close()


def login(user: User) -> Client:
    client = Client()
    assert client.login(username=user.username, password=PASSWORD)
    return client


@pytest.fixture
def technologist_client(technologist: User) -> Client:
    return login(technologist)


@pytest.fixture
def outsider_client(outsider: User) -> Client:
    return login(outsider)


@pytest.fixture
def radiologist_client(radiologist: User) -> Client:
    return login(radiologist)


@pytest.fixture
def administrator_client(administrator: User) -> Client:
    return login(administrator)


@dataclass
class Worker:
    """A real Celery worker process on a queue of its own; `output()` is its log so far."""

    queue: str
    log_path: Path

    def output(self) -> str:
        return self.log_path.read_text()


@pytest.fixture
def celery_worker_process(tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    """Start a Celery worker over CELERY_BROKER_URL that sees the test database.

    It needs a broker and a database another process can share: without CELERY_BROKER_URL,
    or on SQLite (the test database is this process's file, written in a transaction the
    worker would not see), the test is skipped with that reason. Extra keyword arguments
    become the worker's environment, e.g. CONSULT_AUTO_ASSIGN="false"."""
    import os
    import subprocess
    import sys
    import uuid

    from django.conf import settings as django_settings
    from django.db import connection

    if not os.environ.get("CELERY_BROKER_URL"):
        pytest.skip("needs CELERY_BROKER_URL (Redis)")
    if connection.vendor != "postgresql":
        pytest.skip("the worker process needs a shared database: run with DATABASE_URL on PostgreSQL")
    db = django_settings.DATABASES["default"]
    user = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    database_url = f"postgres://{user}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    started: list[tuple[subprocess.Popen[bytes], Any]] = []

    def start(**env: str) -> Worker:
        worker = Worker(queue=f"test-{uuid.uuid4().hex}", log_path=tmp_path / f"worker-{len(started)}.log")
        log = worker.log_path.open("w+")
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "cloudpacs",
                "worker",
                "--pool",
                "solo",
                "-l",
                "INFO",
                "-Q",
                worker.queue,
            ],
            cwd=Path(__file__).resolve().parent.parent,
            env=dict(os.environ, DATABASE_URL=database_url, **env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        started.append((process, log))
        return worker

    yield start
    for process, log in started:
        process.terminate()
        process.wait(timeout=30)
        log.close()


@pytest.fixture
def receiver(settings) -> Iterator[tuple[str, int]]:
    """The DICOM receiver (dicomnode) serving from a thread on a free loopback port, with
    the AE title CLOUDPACS; yields its address."""
    from dicomnode import server as dicomnode

    settings.DICOM_AE_TITLE = "CLOUDPACS"
    server = dicomnode.start_server("127.0.0.1", 0, block=False)
    try:
        yield "127.0.0.1", server.server_address[1]
    finally:
        server.shutdown()
