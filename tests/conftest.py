"""Fixtures shared by the suite: three personas (a township technologist, a county
radiologist, and an outsider from another township), an isolated image store, a small
DICOMweb archive, a private Redis, and the Hanyin demo seeded once for the session."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from facilities.models import ExamKind, Facility, Modality, User
from tests.dicomweb_support import Archive, build_archive
from tests.factories import (
    PASSWORD,
    make_administrator,
    make_county,
    make_ct_modality,
    make_modality,
    make_other_township,
    make_outsider,
    make_radiologist,
    make_technologist,
    make_township,
)
from tests.processes import RedisServer
from tests.s3_support import MotoS3, use_object_store


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist each worker has its own test database (pytest-django adds _gw0,
    _gw1, ... to its name) and its own Redis database: the one CELERY_BROKER_URL names plus
    the worker's number, for this process, its Celery app and every process it starts."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    url = os.environ.get("CELERY_BROKER_URL")
    if worker and url:
        from django.conf import settings

        url = worker_broker_url(url, worker)
        os.environ["CELERY_BROKER_URL"] = url
        settings.CELERY_BROKER_URL = url


def worker_broker_url(url: str, worker: str) -> str:
    """redis://host:port/N for xdist worker gwK: redis://host:port/(N+K)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    base = int(parts.path.strip("/") or 0)
    number = base + int(worker.removeprefix("gw"))
    if number > 15:
        raise pytest.UsageError(
            f"CELERY_BROKER_URL={url!r} for xdist worker {worker}: Redis database {number} is past "
            "the 16 a default redis-server has (0-15): name a lower database or run fewer workers"
        )
    return parts._replace(path=f"/{number}").geturl()


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


# Data built once for several tests lives in a transaction held open from the first test
# that uses it to the end of its scope, then rolled back; each test that uses it runs in a
# savepoint of that transaction, so what it writes is undone after it. No other test may
# see those rows, so the tests that use them run after every other test of their scope:
# the seeded demo's (`hanyin`) after every other test of the session, a module's shared
# data (built on `module_transaction`) after every other test of its module. None of them
# may be transactional (a transactional test cannot run inside a transaction).
SEEDED_DEMO = "hanyin"
MODULE_TRANSACTION = "module_transaction"
HELD = (SEEDED_DEMO, MODULE_TRANSACTION)


def _uses(item: pytest.Item, fixture: str) -> bool:
    return fixture in getattr(item, "fixturenames", ())


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> Iterator[None]:
    """Before the other plugins: under pytest-xdist with `--dist loadgroup` (scripts/test.sh)
    the seeded demo's tests go to one worker, so the demo is seeded once. After them (after
    pytest-django's order): the tests of data held in a transaction go last in their scope."""
    for item in items:
        if _uses(item, SEEDED_DEMO):
            item.add_marker(pytest.mark.xdist_group(SEEDED_DEMO))
    yield
    items[:] = order_held_data(items)


def order_held_data(items: list[pytest.Item]) -> list[pytest.Item]:
    """pytest-django has already ordered the tests (database tests, then transactional
    ones, then the rest). Move each module's users of `module_transaction` after the last
    other test of their module, and the seeded demo's tests to the end, keeping the order
    of each."""
    for item in items:
        transactional = {"transactional_db", "live_server"} & set(getattr(item, "fixturenames", ()))
        if transactional and any(_uses(item, held) for held in HELD):
            raise pytest.UsageError(
                f"{item.nodeid}: data held in a transaction that is never committed "
                "(the seeded demo, a module's shared data) cannot serve a transactional test or a live server"
            )

    def module(item: pytest.Item) -> str:
        return item.nodeid.split("::")[0]

    held: dict[str, list[pytest.Item]] = {}
    last_other: dict[str, int] = {}
    for index, item in enumerate(items):
        if _uses(item, MODULE_TRANSACTION) and not _uses(item, SEEDED_DEMO):
            held.setdefault(module(item), []).append(item)
        else:
            last_other[module(item)] = index
    moved = {id(item) for users in held.values() for item in users}
    ordered: list[pytest.Item] = []
    for index, item in enumerate(items):
        name = module(item)
        if id(item) in moved:
            if name not in last_other and item is held[name][0]:
                ordered.extend(held[name])  # no other test in the module: where they were
            continue
        ordered.append(item)
        if last_other.get(name) == index:
            ordered.extend(held.get(name, []))
    ordered.sort(key=lambda item: _uses(item, SEEDED_DEMO))
    return ordered


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


@dataclass
class ModuleTransaction:
    """What `module_transaction` gives a module's shared-data fixture: `building()`, the
    setting in which to write the data (the database open, the tests' settings, tasks run
    in-process), and the image store its tests share."""

    directory: Path
    blocker: Any

    @property
    def storage_root(self) -> Path:
        return self.directory / "storage"

    @contextmanager
    def building(self) -> Iterator[None]:
        from django.db import connection
        from django.test import override_settings

        from cloudpacs.celery import app

        saved = {key: app.conf[key] for key in ("task_always_eager", "task_eager_propagates")}
        settings = override_settings(
            STORAGE_ROOT=self.storage_root, LANGUAGE_CODE="zh-hans", CELERY_TASK_ALWAYS_EAGER=True
        )
        with self.blocker.unblock(), settings:
            app.conf.update(task_always_eager=True, task_eager_propagates=True)
            try:
                load_migration_data()
                yield
                # Fire the deferred foreign-key checks of the shared rows now, once, as
                # `hanyin` does: left pending, each test's teardown would check them again.
                connection.check_constraints()
            finally:
                app.conf.update(saved)


@pytest.fixture(scope="module")
def module_transaction(django_db_setup, django_db_blocker, tmp_path_factory) -> Iterator[ModuleTransaction]:
    """A transaction for data that a module's tests share, built once (in
    `module_transaction.building()`) by a module-scoped fixture of that module, and rolled
    back after the module's last test; see HELD above. The fixture's tests take `db` too
    (each runs in a savepoint) and share its image store."""
    from django.db import transaction

    held = ModuleTransaction(tmp_path_factory.mktemp("module"), django_db_blocker)
    with django_db_blocker.unblock():
        atomic = transaction.atomic()
        atomic.__enter__()
    try:
        yield held
    finally:
        with django_db_blocker.unblock():
            transaction.set_rollback(True)
            atomic.__exit__(None, None, None)


@pytest.fixture(autouse=True)
def _isolated_storage(request, settings, tmp_path: Path) -> None:
    if _uses(request.node, MODULE_TRANSACTION):
        settings.STORAGE_ROOT = request.getfixturevalue(MODULE_TRANSACTION).storage_root
    else:
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
    return make_county()


@pytest.fixture
def township(db) -> Facility:
    return make_township()


@pytest.fixture
def other_township(db) -> Facility:
    return make_other_township()


@pytest.fixture
def ct_modality(township: Facility) -> Modality:
    return make_ct_modality(township)


@pytest.fixture
def dr_modality(township: Facility) -> Modality:
    return make_modality(township, ExamKind.DR, "XUANWO_DR")


@pytest.fixture
def technologist(township: Facility) -> User:
    return make_technologist(township)


@pytest.fixture
def outsider(other_township: Facility) -> User:
    return make_outsider(other_township)


@pytest.fixture
def radiologist(county: Facility) -> User:
    return make_radiologist(county)


@pytest.fixture
def administrator(county: Facility) -> User:
    return make_administrator(county)


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
    from playwright.sync_api import sync_playwright

    from tests.browser import BUILT_VIEWER, launch

    assert BUILT_VIEWER.exists(), "the viewer is not built: run scripts/build-viewer.sh"
    with sync_playwright() as playwright:
        browser = launch(playwright)
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
