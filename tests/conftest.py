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
from tests import template_database
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

# pytester: the suite's own machinery is tested on small suites run in this process.
pytest_plugins = ["pytester"]


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist each worker has its own test database (`test_<name>_gw0`, ...,
    cloned from one migrated once: tests/template_database.py) and its own Redis database:
    the one CELERY_BROKER_URL names plus the worker's number, for this process, its Celery
    app and every process it starts."""
    template_database.register(config)
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
# see those rows, so the tests that use them run one after the other, apart from the rest:
# a module's shared data (built on `module_transaction`) after every other test of its
# module; the seeded demo's (`hanyin`) in one process after every other test, under
# pytest-xdist as one group of their own, the demo rolled back after the last of them
# (`pytest_runtest_teardown`). None of them may be transactional (a transactional test
# cannot run inside a transaction); a browser reaches them through
# `live_server_on_held_data`.
SEEDED_DEMO = "hanyin"
MODULE_TRANSACTION = "module_transaction"
HELD = (SEEDED_DEMO, MODULE_TRANSACTION)


def _uses(item: pytest.Item, fixture: str) -> bool:
    return fixture in getattr(item, "fixturenames", ())


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> Iterator[None]:
    """Before the other plugins: under pytest-xdist with `--dist loadgroup` (scripts/test.sh)
    each test is a unit of work of its own but for the groups named here: the seeded demo's
    tests go to one worker, so the demo is seeded once, and so do all the tests of a module
    with data held for its tests (`module_transaction`) or any other module-scoped fixture,
    so that it is built once. After
    them (after pytest-django's order): the tests of data held in a transaction go last in
    their scope."""
    groups = work_groups(items)
    for item, group in groups:
        item.add_marker(pytest.mark.xdist_group(group))
    yield
    if config.getoption("loadgroup", False):
        name_groups(groups)
    items[:] = order_held_data(items)


def name_groups(groups: list[tuple[pytest.Item, str]]) -> None:
    """In a pytest-xdist worker, what pytest-xdist 3.8 means to do and does not on pytest 9:
    the group's name after an @ at the end of each test's id, by which the controller hands
    out one group as one unit of work. pytest-xdist sets `item._nodeid`, which pytest 9 no
    longer reads (its id is `item._id`), so without this every test went alone."""
    from _pytest.nodeid import NodeId

    for item, group in groups:
        if not item.nodeid.endswith(f"@{group}"):
            item._id = NodeId.parse(f"{item.nodeid}@{group}")  # type: ignore[attr-defined]


def _module(item: pytest.Item) -> str:
    return item.nodeid.split("::")[0]


def _shares_module_fixture(item: pytest.Item) -> bool:
    """Whether the test uses a module-scoped fixture, directly or through another fixture."""
    info = getattr(item, "_fixtureinfo", None)
    return info is not None and any(defs[-1].scope == "module" for defs in info.name2fixturedefs.values())


def work_groups(items: list[pytest.Item]) -> list[tuple[pytest.Item, str]]:
    """The pytest-xdist group of each test that has one: the seeded demo's tests are one
    group; every other test of a module some of whose tests use `module_transaction` is
    its module's group (the module's other tests too, so that on the worker that runs them
    they come before the held data, in the order `order_held_data` gives them), and so is
    every test of a module some of whose tests share another module-scoped fixture: split
    between workers, each of them would build it (`manage.py platform`'s tests migrated
    their SQLite database twice, 90-100 s each at load 20, and were the run's last 120 s).
    pytest-xdist hands out the groups with the most tests first, so these start early."""
    shared = {
        _module(item)
        for item in items
        if not _uses(item, SEEDED_DEMO) and (_uses(item, MODULE_TRANSACTION) or _shares_module_fixture(item))
    }
    groups: list[tuple[pytest.Item, str]] = []
    for item in items:
        if _uses(item, SEEDED_DEMO):
            groups.append((item, SEEDED_DEMO))
        elif _module(item) in shared:
            groups.append((item, _module(item)))
    return groups


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
    demo_modules = {_module(item) for item in items if _uses(item, SEEDED_DEMO)}
    for item in items:
        if _uses(item, MODULE_TRANSACTION) and not _uses(item, SEEDED_DEMO) and _module(item) in demo_modules:
            # The module's held data lives until the module's last test: the demo would be
            # seeded on top of it when the module runs alone (the seed found the module's
            # exams at a demo township and took the history for loaded).
            raise pytest.UsageError(
                f"{_module(item)}: a module that holds data in a transaction (module_transaction) "
                "cannot also use the seeded demo: move its demo tests to a module of their own"
            )

    held: dict[str, list[pytest.Item]] = {}
    last_other: dict[str, int] = {}
    for index, item in enumerate(items):
        if _uses(item, MODULE_TRANSACTION) and not _uses(item, SEEDED_DEMO):
            held.setdefault(_module(item), []).append(item)
        else:
            last_other[_module(item)] = index
    moved = {id(item) for users in held.values() for item in users}
    ordered: list[pytest.Item] = []
    for index, item in enumerate(items):
        name = _module(item)
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
    """The Hanyin demo (`manage.py seed_hanyin`, with its history), loaded once inside a
    transaction that is rolled back after the last test that uses it, so no other test sees
    its rows; yields what the command printed. Each test that uses it also takes `db` and
    runs in a savepoint of that transaction, so what it writes is undone after it. The
    tests that use it run one after the other (see `pytest_collection_modifyitems`)."""
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


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """The seeded demo's transaction is rolled back as soon as the next test does not use
    it, not at the end of the session. Under pytest-xdist its tests are one group, which
    goes first (the longest unit of work): the tests its worker runs after them see none of
    its rows. A later test that asks for the demo again would seed it again."""
    yield
    if nextitem is not None and _uses(item, SEEDED_DEMO) and not _uses(nextitem, SEEDED_DEMO):
        release_seeded_demo(item)


def release_seeded_demo(item: pytest.Item) -> None:
    # pytest's own way to end a fixture before its scope does: the fixture's definition
    # runs its finalizers (the rollback in `hanyin`) and forgets its value.
    fixturedef = item._fixtureinfo.name2fixturedefs[SEEDED_DEMO][-1]  # type: ignore[attr-defined]
    fixturedef.finish(request=item._request)  # type: ignore[attr-defined]


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


# Tables a flush leaves as they are: the content types and permissions that the flush's
# post_migrate signal would write back, the same rows as a freshly migrated database has.
KEPT_BY_FLUSH = frozenset({"django_content_type", "auth_permission"})
FLUSHED_FIRST = "cloudpacs_instance"


@pytest.fixture(scope="session", autouse=True)
def _flush_by_delete() -> Iterator[None]:
    """A transactional test ends with Django's flush, which on PostgreSQL is one TRUNCATE of
    every table: a new file for each table and index, synced at commit, 2-4 s a test on a
    loaded machine (629 such tests). The rows go instead with a DELETE from each table, as
    Django's SQLite flush already does, in one transaction whose deferred foreign-key checks
    run at its end: 0.05 s. The content types and permissions stay (KEPT_BY_FLUSH), so the
    post_migrate signal that follows the flush finds them instead of inserting them again.
    Sequences are not reset either way; a flush that resets them or cascades (neither
    used here) is Django's own."""
    from django.db.backends.postgresql.base import DatabaseWrapper as PostgreSQL
    from django.db.backends.sqlite3.base import DatabaseWrapper as SQLite

    def deleting(flush: Callable[..., list[str]]) -> Callable[..., list[str]]:
        def sql_flush(
            self: Any, style: Any, tables: Any, *, reset_sequences: bool = False, allow_cascade: bool = False
        ) -> list[str]:
            if reset_sequences or allow_cascade:
                return flush(self, style, tables, reset_sequences=reset_sequences, allow_cascade=allow_cascade)
            # The instances before their series: deleting a series that still has any is
            # refused (migration 0018).
            emptied = sorted((table for table in tables if table not in KEPT_BY_FLUSH), key=FLUSHED_FIRST.__ne__)
            if self.connection.vendor != "postgresql" or not emptied:
                return flush(self, style, emptied)
            # The tables' names come from Django's introspection, quoted.
            deletes = "; ".join(f"DELETE FROM {self.quote_name(table)}" for table in emptied)  # noqa: S608
            return ["SET CONSTRAINTS ALL DEFERRED", deletes]

        return sql_flush

    with pytest.MonkeyPatch.context() as patch:
        for backend in (PostgreSQL, SQLite):
            patch.setattr(backend.ops_class, "sql_flush", deleting(backend.ops_class.sql_flush))
        yield


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


@pytest.fixture(scope="session", autouse=True)
def _servers_stop_at_once() -> Iterator[None]:
    """A DICOM server serving from a thread of the test process (the receiver's
    `start_server(block=False)`, pynetdicom's `AE.start_server(block=False)` for a test's
    own SCP) sees its shutdown at the next turn of its accept loop, which waits up to 0.5 s
    for a connection (socketserver's default), and the test waited that out as it stopped
    the server: `test_query_retrieve_scp.py`'s 52 tests spent 31 s stopping servers. In
    the tests' process the loop turns every 0.05 s. The receiver's own processes (`manage.py
    dicomnode`) keep the default."""
    from pynetdicom.transport import AssociationServer

    serve = AssociationServer.serve_forever

    def serve_forever(self: AssociationServer, poll_interval: float = 0.05) -> None:
        serve(self, poll_interval)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(AssociationServer, "serve_forever", serve_forever)
        yield


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
    the database they are put back when missing (`load_migration_data`)."""
    uses_db = request.node.get_closest_marker("django_db") is not None or bool(
        {"db", "transactional_db"} & set(request.fixturenames)
    )
    if not uses_db:
        return
    request.getfixturevalue("_django_db_helper")
    load_migration_data()


@dataclass
class MigrationData:
    """The rows that data migrations load, as the migrated test database has them, read
    once in each process: after a transactional test's flush they go back in three bulk
    inserts, with their own keys, instead of the loaders' few hundred queries."""

    body_parts: list[dict[str, Any]]
    templates: list[dict[str, Any]]
    template_parts: list[dict[str, Any]]

    @classmethod
    def read(cls) -> MigrationData:
        from cloudpacs.models import BodyPart
        from consults.models import ReportTemplate

        library = ReportTemplate.objects.exclude(library_key="")
        return cls(
            body_parts=list(BodyPart.objects.values()),
            templates=list(library.values()),
            template_parts=list(ReportTemplate.parts.through.objects.filter(reporttemplate__in=library).values()),
        )

    def write(self) -> None:
        from cloudpacs.models import BodyPart
        from consults.models import ReportTemplate

        BodyPart.objects.bulk_create([BodyPart(**row) for row in self.body_parts])
        ReportTemplate.objects.bulk_create([ReportTemplate(**row) for row in self.templates])
        through = ReportTemplate.parts.through
        through.objects.bulk_create([through(**row) for row in self.template_parts])


_migration_data: MigrationData | None = None


def load_migration_data() -> None:
    """Put back what data migrations load (the body-part vocabulary, the report-template
    library) where a transactional test's flush took it: as this process first saw it, or
    with the loaders' own functions."""
    import importlib

    from django.apps import apps

    from cloudpacs.models import BodyPart
    from consults.models import ReportTemplate

    global _migration_data
    parts, library = BodyPart.objects.exists(), ReportTemplate.objects.exclude(library_key="").exists()
    if parts and library:
        if _migration_data is None:
            _migration_data = MigrationData.read()
        return
    if _migration_data is not None and not parts and not ReportTemplate.objects.exists():
        _migration_data.write()  # what a flush leaves: both tables empty
        return
    if not parts:
        importlib.import_module("cloudpacs.migrations.0006_body_parts").add_body_parts(apps, None)
    # The report-template library is data of the same kind, loaded the same way.
    from consults import template_library
    from consults.template_library import v1

    if not library:
        template_library.install(ReportTemplate, BodyPart, v1.LIBRARY, v1.VERSION)
    if _migration_data is None:
        # A process whose first test found them gone (a database kept by --reuse-db after
        # a flush) reads them now, so that the next flush costs three inserts too.
        _migration_data = MigrationData.read()


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


@pytest.fixture
def live_server_on_held_data(db) -> Iterator[str]:
    """A web server for a browser, on a free loopback port, that answers with this test's
    own database connection: it sees the rows of a transaction held open for several tests
    (the seeded demo), which pytest-django's `live_server` cannot, since that one needs
    committed rows (a transactional test) and the demo is never committed. Yields its URL.

    Each connection from the browser has its thread, as in `runserver` (Chromium opens
    connections before it has a request for them), but the requests are answered one at a
    time, each response whole, while this thread waits on the browser (Playwright's calls
    block it, and Django refuses ORM calls from it meanwhile): the connection is never used
    by two threads at once. For the server's life Django does not close the connection at
    the end of a request, as its test client does not."""
    import socketserver
    import threading

    from django.contrib.staticfiles.handlers import StaticFilesHandler
    from django.core.handlers.wsgi import WSGIHandler
    from django.core.servers.basehttp import WSGIRequestHandler, WSGIServer
    from django.core.signals import request_finished, request_started
    from django.db import DEFAULT_DB_ALIAS, close_old_connections, connections

    shared = connections[DEFAULT_DB_ALIAS]
    django_app = StaticFilesHandler(WSGIHandler())
    one_at_a_time = threading.Lock()

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        with one_at_a_time:
            connections[DEFAULT_DB_ALIAS] = shared
            response = django_app(environ, start_response)
            try:
                return [b"".join(response)]
            finally:
                response.close()

    class Server(socketserver.ThreadingMixIn, WSGIServer):
        daemon_threads = True

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = Server(("127.0.0.1", 0), QuietHandler, allow_reuse_address=False)
    server.set_app(app)
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    shared.inc_thread_sharing()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
        shared.dec_thread_sharing()
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


def login(user: User) -> Client:
    # Accept: */* as every browser and HTTP library sends: DICOMweb answers a GET without
    # an Accept header field with 406 (PS3.18 8.7.7).
    client = Client(HTTP_ACCEPT="*/*")
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
