"""cloudpacs.services: an instance of a known series committed while its file's fsync runs
(PostgreSQL, local disk), answered only after both, and what the next start does with a row
whose file never became durable (resolve_unsynced_files)."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import pytest
from django.db import connection, connections
from pydicom.uid import generate_uid

from cloudpacs import services, storage
from cloudpacs.models import Instance, Series, Study, UnsyncedFile
from tests.factories import make_dataset
from tests.processes import wait_for
from tests.test_ingest import incoming_files, ingest, staged_file

needs_postgresql = pytest.mark.skipif(
    "connection.vendor != 'postgresql'", reason="the commit and the file's fsync overlap on PostgreSQL only"
)


def series_started(modality, tmp_path: Path) -> tuple[str, str]:
    """A study with one instance in its one series: later instances join a known series."""
    study_uid, series_uid = generate_uid(), generate_uid()
    ingest(make_dataset(study_uid=study_uid, series_uid=series_uid), modality, tmp_path)
    return study_uid, series_uid


def key_of(ds, tmp_path: Path) -> str:
    """The key the dataset will be stored at (its content's hash, as ingest computes it)."""
    staged = staged_file(ds, tmp_path / f"key-{ds.SOPInstanceUID}.dcm")
    storage.discard(staged)
    return storage.key_for(ds.StudyInstanceUID, ds.SOPInstanceUID, staged.sha256)


def fsync_of(key: str, monkeypatch, action) -> None:
    """Run `action(path)` instead of the fsync of the file at `key` (every other fsync as usual)."""
    real = storage._fsync_file
    target = storage.path_for(key)

    def fsync_file(path, *args):
        if Path(path) == target:
            action(path)
        return real(path, *args)

    monkeypatch.setattr(storage, "_fsync_file", fsync_file)


@needs_postgresql
@pytest.mark.django_db(transaction=True)
def test_the_row_commits_while_the_file_syncs_and_the_answer_waits_for_both(ct_modality, tmp_path, monkeypatch):
    study_uid, series_uid = series_started(ct_modality, tmp_path)
    later = make_dataset(study_uid=study_uid, series_uid=series_uid, instance_number=2)
    syncing, release = threading.Event(), threading.Event()

    def blocked(path):
        syncing.set()
        release.wait(30)

    fsync_of(key_of(later, tmp_path), monkeypatch, blocked)
    results: list[services.IngestResult] = []

    def store() -> None:
        try:
            results.append(ingest(later, ct_modality, tmp_path))
        finally:
            connections.close_all()

    storing = threading.Thread(target=store)
    storing.start()
    try:
        assert syncing.wait(30)
        # Committed (seen from this connection) while the file's fsync has not returned,
        # with the row that says so; not answered.
        assert wait_for(lambda: Instance.objects.filter(sop_instance_uid=later.SOPInstanceUID).exists(), 10)
        instance = Instance.objects.get(sop_instance_uid=later.SOPInstanceUID)
        assert UnsyncedFile.objects.filter(instance=instance).exists()
        assert storage.path_for(instance.storage_key).stat().st_size == instance.size
        assert storing.is_alive() and results == []
    finally:
        release.set()
        storing.join(30)
    assert results[0].outcome == services.IngestOutcome.STORED
    # Its UnsyncedFile row goes with the next statement, or when the association ends.
    assert services.clear_synced_files() == 1
    assert not UnsyncedFile.objects.exists()
    assert incoming_files() == []


@needs_postgresql
@pytest.mark.django_db(transaction=True)
def test_a_synced_files_row_goes_with_the_next_instances_statement(ct_modality, tmp_path):
    study_uid, series_uid = series_started(ct_modality, tmp_path)
    stored = [
        ingest(make_dataset(study_uid=study_uid, series_uid=series_uid, instance_number=n), ct_modality, tmp_path)
        for n in (2, 3, 4)
    ]
    # The last one's row waits for a statement, or the association's end.
    assert list(UnsyncedFile.objects.values_list("instance_id", flat=True)) == [stored[-1].instance.pk]
    services.clear_synced_files()
    assert not UnsyncedFile.objects.exists()


@needs_postgresql
@pytest.mark.django_db(transaction=True)
def test_a_file_whose_fsync_fails_after_the_commit_is_taken_back_and_not_answered(ct_modality, tmp_path, monkeypatch):
    study_uid, series_uid = series_started(ct_modality, tmp_path)
    later = make_dataset(study_uid=study_uid, series_uid=series_uid, instance_number=2)
    key = key_of(later, tmp_path)

    def failed(path):
        raise OSError(errno.EIO, "Input/output error")

    fsync_of(key, monkeypatch, failed)
    statements: list[str] = []

    def record(execute, sql, params, many, context):
        statements.append(sql.split()[0].upper())
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record), pytest.raises(OSError):
        ingest(later, ct_modality, tmp_path)
    # The row was written, then taken back.
    assert "WITH" in statements and "DELETE" in statements[statements.index("WITH") :]
    assert not Instance.objects.filter(sop_instance_uid=later.SOPInstanceUID).exists()
    assert not UnsyncedFile.objects.exists()
    study = Study.objects.get(study_uid=study_uid)
    assert services.study_instances(study) == 1
    assert services.series_instances(Series.objects.get(series_uid=series_uid)) == 1
    assert not storage.path_for(key).exists()
    assert incoming_files() == []


@pytest.mark.django_db
def test_the_start_syncs_a_whole_file_and_takes_back_an_emptied_or_missing_one(ct_modality, tmp_path, monkeypatch):
    """What a power cut leaves of rows committed before their files' fsyncs returned:
    resolve_unsynced_files keeps what is whole (and syncs it now) and unindexes the rest."""
    study_uid, series_uid = series_started(ct_modality, tmp_path)
    emptied, missing, whole = (
        ingest(make_dataset(study_uid=study_uid, series_uid=series_uid, instance_number=n), ct_modality, tmp_path)
        for n in (2, 3, 4)
    )
    services.clear_synced_files()
    UnsyncedFile.objects.all().delete()
    for result in (emptied, missing, whole):
        UnsyncedFile.objects.create(instance=result.instance)
    os.truncate(storage.path_for(emptied.instance.storage_key), 0)
    storage.path_for(missing.instance.storage_key).unlink()
    synced: list[str] = []
    monkeypatch.setattr(storage, "sync_key", synced.append)

    assert services.resolve_unsynced_files() == (1, 2)

    assert synced == [whole.instance.storage_key]
    assert set(Instance.objects.filter(series__series_uid=series_uid).values_list("pk", flat=True)) == {
        Instance.objects.get(instance_number=1, series__series_uid=series_uid).pk,
        whole.instance.pk,
    }
    assert not storage.path_for(emptied.instance.storage_key).exists()
    assert storage.path_for(whole.instance.storage_key).stat().st_size == whole.instance.size
    assert services.study_instances(Study.objects.get(study_uid=study_uid)) == 2
    assert services.series_instances(Series.objects.get(series_uid=series_uid)) == 2
    assert not UnsyncedFile.objects.exists()
    assert services.resolve_unsynced_files() == (0, 0)


@pytest.mark.django_db
def test_the_first_instance_of_a_series_is_indexed_only_once_its_file_is_durable(ct_modality, tmp_path):
    """Its row makes the series (and the study): never written before the fsync returned."""
    series_started(ct_modality, tmp_path)
    assert not UnsyncedFile.objects.exists()


@pytest.mark.django_db
def test_storage_commitment_syncs_a_file_not_yet_known_durable_before_it_counts(ct_modality, tmp_path, monkeypatch):
    """A console deletes its copy on the report: an instance whose row is still recorded as
    committed before its file's fsync returned is committed only once that file is synced."""
    from cloudpacs import queryretrieve
    from facilities.services import application_entity_for_ae_title

    study_uid, series_uid = series_started(ct_modality, tmp_path)
    later = ingest(make_dataset(study_uid=study_uid, series_uid=series_uid, instance_number=2), ct_modality, tmp_path)
    services.clear_synced_files()
    UnsyncedFile.objects.get_or_create(instance=later.instance)
    synced: list[str] = []
    monkeypatch.setattr(storage, "sync_key", synced.append)
    entity = application_entity_for_ae_title(ct_modality.ae_title)
    assert entity is not None
    first = Instance.objects.get(series__series_uid=series_uid, instance_number=1)
    references = [
        (first.sop_class_uid, first.sop_instance_uid),
        (later.instance.sop_class_uid, later.instance.sop_instance_uid),
    ]

    result = queryretrieve.commitment(entity, generate_uid(), references)

    assert result.committed == references and result.failed == []
    assert synced == [later.instance.storage_key]
