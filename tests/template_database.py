"""One migrated test database for a parallel run, cloned for each pytest-xdist worker.

Without this each worker creates its test database and runs every migration into it (on
two loaded cores 30-100 s a worker, the same work three times). Instead the controlling
process (the one that starts the workers and runs no test) creates the test database once,
through Django's own `create_test_db`, before it starts the first worker; each worker then
clones it with Django's `clone_test_db`, the way `manage.py test --parallel` does:
PostgreSQL copies it (`CREATE DATABASE test_x_gw0 TEMPLATE test_x`), SQLite copies the
file. The clones get the names pytest-django would give them (`test_x_gw0`, ...), and the
controlling process drops the template after the last worker has stopped.

Only where pytest-django would migrate anyway: not with `--reuse-db` or `--no-migrations`,
whose databases stay pytest-django's, and not in one process (`-n 0`)."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

# The key under which the controlling process hands each worker the template's name.
TEMPLATE = "yunying_template_databases"


def wanted(config: pytest.Config) -> bool:
    return not (config.getoption("reuse_db", False) or config.getoption("nomigrations", False))


class Template:
    """The controlling process's side: creates the template before the first worker starts,
    names it to every worker, and drops it at the end of the session."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.created: dict[str, tuple[str, str]] = {}  # alias: (the configured name, the template's)

    def _unblocked(self) -> Any:
        from pytest_django.plugin import blocking_manager_key

        return self.config.stash[blocking_manager_key].unblock()

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """pytest-xdist calls this for each worker before it starts it."""
        if not self.created:
            self._create()
        node.workerinput[TEMPLATE] = {alias: names[1] for alias, names in self.created.items()}

    def _create(self) -> None:
        from django.db import connections

        with self._unblocked():
            for alias in connections:
                connection = connections[alias]
                if connection.settings_dict["TEST"].get("MIRROR"):
                    continue
                configured = connection.settings_dict["NAME"]
                template = connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
                # PostgreSQL copies a database only while no one is connected to it; the
                # last SQLite connection to close folds the write-ahead log into the file.
                connection.close()
                self.created[alias] = (configured, template)

    def pytest_sessionfinish(self) -> None:
        """After the last worker has stopped (and dropped its clone)."""
        from django.db import connections

        with self._unblocked():
            for alias, (configured, template) in self.created.items():
                try:
                    connections[alias].creation.destroy_test_db(old_database_name=configured, verbosity=0)
                except Exception as error:  # a session still connected to it, say
                    warnings.warn(f"the template test database {template} was not dropped: {error}", stacklevel=1)
        self.created.clear()


@pytest.fixture(scope="session")
def django_db_setup(request, django_test_environment, django_db_blocker) -> Iterator[None]:
    """A worker's test database: a clone of the template (this module is a worker's plugin
    only when the controlling process made one), dropped at the end of the worker's session."""
    from django.conf import settings
    from django.db import connections

    worker = request.config.workerinput["workerid"]
    configured: dict[str, str] = {}
    with django_db_blocker.unblock():
        for alias, template in request.config.workerinput[TEMPLATE].items():
            connection = connections[alias]
            configured[alias] = connection.settings_dict["NAME"]
            connection.settings_dict["NAME"] = template
            connection.creation.clone_test_db(suffix=worker, verbosity=0, autoclobber=True)
            clone = connection.creation.get_test_db_clone_settings(worker)["NAME"]
            # In place, as Django's own parallel runner does, so that threads and the child
            # processes a test starts (tests/processes.py) find the clone.
            connection.settings_dict["NAME"] = clone
            settings.DATABASES[alias]["NAME"] = clone
            connection.close()
    yield
    with django_db_blocker.unblock():
        for alias, name in configured.items():
            connection = connections[alias]
            clone = connection.settings_dict["NAME"]
            try:
                connection.creation.destroy_test_db(old_database_name=name, verbosity=0)
            except Exception as error:
                # A connection a test left open (a thread's still ending, a child process's)
                # keeps the clone. Every test of this worker has ended: on PostgreSQL the
                # clone is dropped with that connection ended (13 and later); else, as
                # pytest-django's own teardown does, it stays and the next run replaces it.
                if not _dropped_by_force(connection, clone):
                    warnings.warn(f"the test database was not dropped: {error}", stacklevel=1)
                connection.settings_dict["NAME"] = name
                settings.DATABASES[alias]["NAME"] = name


def _dropped_by_force(connection: Any, name: str) -> bool:
    if connection.vendor != "postgresql":
        return False
    try:
        with connection._nodb_cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {connection.ops.quote_name(name)} WITH (FORCE)")
    except Exception:
        return False
    return True


def register(config: pytest.Config) -> None:
    """From conftest's pytest_configure: the controlling process's side, or a worker's."""
    if not wanted(config):
        return
    workerinput = getattr(config, "workerinput", None)
    if workerinput is None:
        config.pluginmanager.register(Template(config), "yunying-template-database")
    elif workerinput.get(TEMPLATE):
        # This module's `django_db_setup`, registered after pytest-django's, replaces it.
        config.pluginmanager.register(sys.modules[__name__], "yunying-cloned-database")
