"""An instance never names a series that is not there, with no foreign key between them
(migration 0018): the statements that write an instance read its series themselves, and
deleting a series waits out every statement writing instances, then refuses while the
series has any."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import IntegrityError, connection, connections, transaction
from pydicom.uid import generate_uid

from cloudpacs import services
from cloudpacs.models import Instance, Series, UnsyncedFile
from tests.factories import ingest, make_dataset

ORPHANS = (
    "SELECT count(*) FROM cloudpacs_instance i"
    " WHERE NOT EXISTS (SELECT 1 FROM cloudpacs_series s WHERE s.id = i.series_id)"
)


def orphans() -> int:
    with connection.cursor() as cursor:
        cursor.execute(ORPHANS)
        return int(cursor.fetchone()[0])


def a_series_of_two(modality, tmp_path) -> Series:
    study_uid, series_uid = generate_uid(), generate_uid()
    for number in (1, 2):
        ds = make_dataset(study_uid=study_uid, series_uid=series_uid, instance_number=number)
        assert ingest(ds, modality, tmp_path).outcome == services.IngestOutcome.STORED
    return Series.objects.get(series_uid=series_uid)


def raw_connection():
    """A connection of its own beside Django's, in a transaction until committed."""
    import psycopg

    params = connections["default"].get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    return psycopg.connect(**params)


def waiting_for_a_lock(pid: int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [pid])
        found = cursor.fetchone()
    return found is not None and found[0] == "Lock"


def wait_until(condition, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"never {what}"
        time.sleep(0.02)


@pytest.mark.django_db
def test_a_series_that_has_instances_cannot_be_deleted_but_its_cascade_can(ct_modality, tmp_path):
    series = a_series_of_two(ct_modality, tmp_path)
    with pytest.raises(IntegrityError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("DELETE FROM cloudpacs_series WHERE id = %s", [series.pk])
    assert Instance.objects.filter(series=series).count() == 2
    # Django's cascade deletes the instances first.
    series.delete()
    assert not Instance.objects.filter(series_id=series.pk).exists()
    assert orphans() == 0


@pytest.mark.django_db
def test_an_instance_cannot_be_moved_to_a_series_that_is_not_there(ct_modality, tmp_path):
    series = a_series_of_two(ct_modality, tmp_path)
    missing = Series.objects.order_by("-pk").values_list("pk", flat=True).first() + 1
    with pytest.raises(IntegrityError), transaction.atomic():
        Instance.objects.filter(series=series).update(series_id=missing)
    assert Instance.objects.filter(series=series).count() == 2
    assert orphans() == 0


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite's writers take turns")
@pytest.mark.django_db(transaction=True)
def test_an_instance_stored_while_its_series_is_deleted_goes_into_a_series_that_is_there(ct_modality, tmp_path):
    """The deletion's transaction holds the instance table: the instance's one statement
    waits for it to end, then finds its series gone and stores it as the first of a
    series again. With the foreign key (before migration 0018) the instance was refused
    at its commit."""
    series = a_series_of_two(ct_modality, tmp_path)
    deleter = raw_connection()
    outcome: list[object] = []
    later = make_dataset(study_uid=series.study.study_uid, series_uid=series.series_uid, instance_number=3)

    def store() -> None:
        try:
            outcome.append(ingest(later, ct_modality, tmp_path))
        except Exception as exc:  # reported by the assertions below
            outcome.append(exc)
        finally:
            connections.close_all()

    writer = threading.Thread(target=store)
    try:
        deleter.execute("DELETE FROM cloudpacs_unsyncedfile")
        deleter.execute("DELETE FROM cloudpacs_instance WHERE series_id = %s", [series.pk])
        deleter.execute("DELETE FROM cloudpacs_series WHERE id = %s", [series.pk])
        writer.start()
        wait_until(lambda: any(waiting_for_a_lock(pid) for pid in backends_but(deleter)), "waited")
        deleter.commit()
        writer.join(30)
    finally:
        deleter.close()
        writer.join(30)
    [result] = outcome
    assert isinstance(result, services.IngestResult), result
    assert result.outcome == services.IngestOutcome.STORED
    again = Series.objects.get(series_uid=series.series_uid)
    assert again.pk != series.pk and again.study_id == series.study_id
    assert list(Instance.objects.values_list("series_id", flat=True)) == [again.pk]
    assert orphans() == 0


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite's writers take turns")
@pytest.mark.django_db(transaction=True)
def test_a_series_deleted_while_an_instance_of_it_is_being_written_is_refused(ct_modality, tmp_path):
    """The instance's transaction came first: the deletion waits for it to end, then sees
    the instance and is refused."""
    series = a_series_of_two(ct_modality, tmp_path)
    writer = raw_connection()
    outcome: list[object] = []

    def delete() -> None:
        deleter = raw_connection()
        try:
            deleter.execute("DELETE FROM cloudpacs_instance WHERE series_id = %s", [series.pk])
            deleter.execute("DELETE FROM cloudpacs_series WHERE id = %s", [series.pk])
            deleter.commit()
            outcome.append("deleted")
        except Exception as exc:  # reported by the assertions below
            outcome.append(exc)
        finally:
            deleter.close()

    deleting = threading.Thread(target=delete)
    try:
        uid = generate_uid()
        writer.execute(
            "INSERT INTO cloudpacs_instance (sop_instance_uid, sop_class_uid, series_id, transfer_syntax_uid,"
            " storage_key, size, sha256, received_at) VALUES (%s, '1.2', %s, '1.2', %s, 1, '', now())",
            [uid, series.pk, f"written/{uid}"],
        )
        deleting.start()
        wait_until(lambda: any(waiting_for_a_lock(pid) for pid in backends_but(writer)), "waited")
        writer.commit()
        deleting.join(30)
    finally:
        writer.close()
        deleting.join(30)
    [result] = outcome
    assert isinstance(result, IntegrityError) or type(result).__name__ == "ForeignKeyViolation", result
    assert Instance.objects.filter(series=series).count() == 3
    assert orphans() == 0


def backends_but(other) -> list[int]:
    """The test database's other backends (not Django's, not `other`)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid NOT IN (pg_backend_pid(), %s)",
            [other.info.backend_pid],
        )
        return [row[0] for row in cursor.fetchall()]


@pytest.mark.django_db
def test_taking_back_an_unsynced_instance_leaves_its_series(ct_modality, tmp_path):
    series = a_series_of_two(ct_modality, tmp_path)
    instance = Instance.objects.filter(series=series).first()
    UnsyncedFile.objects.get_or_create(instance_id=instance.pk)
    assert services._unindex_unsynced(instance.pk, instance.storage_key)
    assert Series.objects.filter(pk=series.pk).exists() and orphans() == 0
