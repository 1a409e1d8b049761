"""The suite's own machinery (conftest.py): data a module builds once in a held
transaction, the order that keeps it from other tests, and what each pytest-xdist worker
gets of its own."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from facilities.models import Facility
from tests.conftest import order_held_data, work_groups, worker_broker_url
from tests.factories import make_facility


@pytest.fixture(scope="module")
def shared_facility(module_transaction) -> Facility:
    with module_transaction.building():
        return make_facility("SHARED")


@pytest.fixture
def shared(shared_facility: Facility, db) -> Facility:
    return shared_facility


def test_a_test_without_the_modules_shared_data_does_not_see_it(db):
    # The users of module_transaction run after this test, so its rows are not there yet.
    assert not Facility.objects.filter(code="SHARED").exists()


def test_a_test_of_the_shared_data_sees_it_and_what_it_writes_is_undone(shared):
    assert Facility.objects.filter(code="SHARED").count() == 1
    make_facility("WRITTEN")
    Facility.objects.filter(pk=shared.pk).update(name="改过")


def test_the_next_test_of_the_shared_data_sees_it_as_built(shared):
    assert Facility.objects.get(pk=shared.pk).name == "SHARED镇卫生院"
    assert not Facility.objects.filter(code="WRITTEN").exists()


def test_the_tests_of_the_shared_data_share_the_image_store_it_was_built_with(shared, settings, module_transaction):
    # Each user of the module's data reads the image store the data was built with.
    store, language = settings.STORAGE_ROOT, settings.LANGUAGE_CODE
    assert (store, language) == (module_transaction.storage_root, "zh-hans")


@dataclass
class Item:
    """What order_held_data reads of a pytest item."""

    nodeid: str
    fixturenames: list[str] = field(default_factory=list)


def test_a_modules_users_of_held_data_go_after_its_other_tests_and_the_demos_last():
    a1 = Item("tests/test_a.py::one", ["module_transaction", "db"])
    a2 = Item("tests/test_a.py::two", ["db"])
    demo = Item("tests/test_d.py::demo", ["hanyin", "db"])
    b1 = Item("tests/test_b.py::one", ["db"])
    a3 = Item("tests/test_a.py::three", [])  # no database: pytest-django put it later
    c1 = Item("tests/test_c.py::only", ["module_transaction", "db"])
    b2 = Item("tests/test_b.py::two", [])
    ordered = order_held_data([a1, a2, demo, b1, a3, c1, b2])
    assert ordered == [a2, b1, a3, a1, c1, b2, demo]


def test_the_demo_is_one_group_and_a_module_with_held_data_another_of_all_its_tests():
    a1 = Item("tests/test_a.py::one", ["module_transaction", "db"])
    a2 = Item("tests/test_a.py::two", [])
    a3 = Item("tests/test_a.py::demo", ["hanyin", "db"])
    b1 = Item("tests/test_b.py::one", ["db"])
    b2 = Item("tests/test_b.py::demo", ["hanyin", "db"])
    groups = work_groups([a1, a2, a3, b1, b2])
    assert groups == [(a1, "tests/test_a.py"), (a2, "tests/test_a.py"), (a3, "hanyin"), (b2, "hanyin")]


SHARED_FIXTURE = """
import pytest


@pytest.fixture(scope="module")
def built_once():
    return object()


@pytest.fixture
def per_test(built_once):
    return built_once


def test_through_another_fixture(per_test):
    pass


def test_alone():
    pass
"""


def test_a_module_whose_tests_share_a_module_fixture_is_one_group_of_all_its_tests(pytester):
    pytester.makepyfile(test_shared=SHARED_FIXTURE, test_plain="def test_alone():\n    pass\n")
    items, _ = pytester.inline_genitems("-p", "no:django", "-p", "no:xdist", "-p", "no:cacheprovider")
    groups = {item.nodeid: group for item, group in work_groups(items)}
    assert groups == {
        "test_shared.py::test_through_another_fixture": "test_shared.py",
        "test_shared.py::test_alone": "test_shared.py",
    }


DEMO_RELEASE = """
import pytest

EVENTS = []


@pytest.fixture(scope="session")
def hanyin():
    EVENTS.append("seeded")
    yield "the demo"
    EVENTS.append("rolled back")


def test_one(hanyin):
    EVENTS.append("one")


def test_two(hanyin):
    EVENTS.append("two")


def test_after():
    assert EVENTS == ["seeded", "one", "two", "rolled back"]


def test_again(hanyin):
    assert EVENTS[-2:] == ["rolled back", "seeded"]
"""


def test_the_demo_is_rolled_back_after_the_last_of_its_tests_in_a_row_and_seeded_again_if_asked(pytester):
    pytester.makeconftest("from tests.conftest import pytest_runtest_teardown  # the hook under test")
    pytester.makepyfile(test_release=DEMO_RELEASE)
    result = pytester.runpytest_inprocess("-p", "no:django", "-p", "no:xdist", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)


def test_held_data_refuses_a_transactional_test():
    item = Item("tests/test_a.py::one", ["module_transaction", "transactional_db"])
    with pytest.raises(pytest.UsageError, match="transactional"):
        order_held_data([item])


def test_held_data_and_the_seeded_demo_are_refused_in_one_module():
    held = Item("tests/test_a.py::held", ["module_transaction", "db"])
    demo = Item("tests/test_a.py::demo", ["hanyin", "db"])
    elsewhere = Item("tests/test_d.py::demo", ["hanyin", "db"])
    with pytest.raises(pytest.UsageError, match="cannot also use the seeded demo"):
        order_held_data([held, demo])
    assert order_held_data([held, elsewhere]) == [held, elsewhere]


def test_each_xdist_worker_gets_the_brokers_database_plus_its_number():
    assert worker_broker_url("redis://127.0.0.1:6379/0", "gw0") == "redis://127.0.0.1:6379/0"
    assert worker_broker_url("redis://127.0.0.1:6379/1", "gw3") == "redis://127.0.0.1:6379/4"
    assert worker_broker_url("redis://:secret@redis:6379", "gw2") == "redis://:secret@redis:6379/2"


def test_a_worker_past_redis_databases_is_refused_with_the_reason():
    with pytest.raises(pytest.UsageError, match="Redis database 16"):
        worker_broker_url("redis://127.0.0.1:6379/14", "gw2")


@pytest.mark.django_db(transaction=True)
def test_a_flush_empties_every_table_but_the_content_types_and_permissions_it_keeps(township):
    """What a transactional test's flush leaves (conftest's `_flush_by_delete`): no rows
    but the content types and permissions, the same ones, which post_migrate then finds."""
    from django.contrib.auth.models import Permission
    from django.contrib.contenttypes.models import ContentType
    from django.core.management import call_command
    from django.db import connection

    from tests.conftest import KEPT_BY_FLUSH
    from tests.factories import make_technologist

    make_technologist(township)  # a user of a facility: rows joined by a foreign key
    kept = list(ContentType.objects.order_by("pk").values_list()), list(Permission.objects.order_by("pk").values_list())
    # As Django's TransactionTestCase calls it after each transactional test.
    call_command("flush", verbosity=0, interactive=False, reset_sequences=False, allow_cascade=False)
    ContentType.objects.clear_cache()
    with connection.cursor() as cursor:
        left = {}
        for table in connection.introspection.django_table_names(only_existing=True, include_views=False):
            cursor.execute(f"SELECT COUNT(*) FROM {connection.ops.quote_name(table)}")  # noqa: S608
            left[table] = cursor.fetchone()[0]
    assert {table for table, rows in left.items() if rows} == KEPT_BY_FLUSH
    assert (
        list(ContentType.objects.order_by("pk").values_list()),
        list(Permission.objects.order_by("pk").values_list()),
    ) == kept
