"""cloudpacs.services.ingest_instance and the study stability sweep, called directly."""

from __future__ import annotations

import errno
import fcntl
import io
import os
import threading
import time
from datetime import date, timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone
from pydicom import dcmread
from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid

from cloudpacs import counts, services, storage
from cloudpacs.models import Instance, Patient, Study
from consults.models import Consult
from consults.services import open_consult_for_study
from consults.tasks import sweep_stable_studies
from facilities.models import AuditEvent, ExamKind
from tests.factories import ingest, make_dataset, write_dataset
from tests.processes import wait_for


def staged_file(ds, path: Path) -> storage.StagedFile:
    """The dataset written to `path` and staged in `.incoming/` as the receiver stages it."""
    return storage.stage(
        write_dataset(ds, path),
        sop_class_uid=ds.SOPClassUID,
        sop_instance_uid=ds.SOPInstanceUID,
        transfer_syntax_uid=ds.file_meta.TransferSyntaxUID,
    )


def stored(key: str):
    """The stored file's dataset, from whichever backend is configured."""
    with storage.open_key(key) as stream:
        return dcmread(stream)


def incoming_files() -> list[Path]:
    directory = Path(settings.STORAGE_ROOT) / storage.INCOMING
    return list(directory.iterdir()) if directory.exists() else []


@pytest.mark.django_db
def test_it_stores_the_file_first_and_leaves_nothing_in_incoming(storage_backend, ct_modality, tmp_path):
    ds = make_dataset()
    result = ingest(ds, ct_modality, tmp_path)
    assert result.outcome == services.IngestOutcome.STORED
    assert result.study_created
    assert storage.exists(result.instance.storage_key)
    assert stored(result.instance.storage_key).SOPInstanceUID == ds.SOPInstanceUID
    assert storage.size_of(result.instance.storage_key) == result.instance.size
    assert incoming_files() == []


@pytest.mark.django_db(transaction=True)
def test_an_instance_of_a_known_series_is_indexed_in_few_statements(ct_modality, tmp_path):
    from django.test.utils import CaptureQueriesContext

    study_uid, series_uid = generate_uid(), generate_uid()
    first = ingest(make_dataset(study_uid=study_uid, series_uid=series_uid), ct_modality, tmp_path)
    Study.objects.filter(study_uid=study_uid).update(status=Study.Status.ARRIVED)
    later = make_dataset(study_uid=study_uid, series_uid=series_uid, instance_number=2, modality="CT", rows=32)
    with CaptureQueriesContext(connection) as queries:
        result = ingest(later, ct_modality, tmp_path)
    statements = [query["sql"].split()[0].upper() for query in queries.captured_queries]
    if connection.vendor == "postgresql":
        # One round trip: the series looked up, and the row (with its UnsyncedFile row)
        # written, in one statement that commits itself.
        assert statements == ["WITH"]
    else:
        assert statements.count("SELECT") == 1 and statements.count("INSERT") == 1 and "UPDATE" not in statements
    # What the ORM's create() wrote, as before.
    instance = Instance.objects.get(sop_instance_uid=later.SOPInstanceUID)
    assert result.outcome == services.IngestOutcome.STORED and not result.study_created
    assert result.instance.pk == instance.pk and not result.instance._state.adding
    assert (instance.series_id, instance.instance_number, instance.rows, instance.columns) == (
        first.instance.series_id,
        2,
        32,
        64,
    )
    assert instance.number_of_frames is None and instance.transfer_syntax_uid == ExplicitVRLittleEndian
    assert (instance.storage_key, instance.size, instance.sha256) == (
        result.instance.storage_key,
        result.instance.size,
        result.instance.sha256,
    )
    assert first.instance.received_at <= instance.received_at <= timezone.now()
    # No other row written: the counters, the last arrival and the status are the sweep's,
    # and readers count the instances it has not counted yet.
    study = Study.objects.get(study_uid=study_uid)
    assert (study.number_of_instances, study.status, study.last_received_at) == (
        0,
        Study.Status.ARRIVED,
        first.instance.received_at,
    )
    assert services.study_instances(study) == services.series_instances(study.series.get()) == 2
    assert counts.fold() == 2
    study.refresh_from_db()
    assert (study.number_of_instances, study.number_of_series, study.modalities_in_study) == (2, 1, "CT")
    assert study.series.get().number_of_instances == 2
    # A late instance makes an arrived study updated.
    assert study.status == Study.Status.UPDATED
    assert study.last_received_at == instance.received_at


@pytest.mark.parametrize(
    ("changed", "written"),
    [
        ({"patient_name": "ZHANG^SAN"}, ["WITH", "WITH"]),
        ({"patient_name": "Li^Si"}, ["WITH", "BEGIN"]),
        ({"modality": "PT"}, ["WITH", "BEGIN"]),
    ],
    ids=["the-name-written-another-way", "another-name", "another-modality"],
)
@pytest.mark.django_db(transaction=True)
def test_the_one_statement_writes_an_instance_that_joins_as_it_is_and_the_rules_decide_the_rest(
    ct_modality, tmp_path, changed, written
):
    """The statement that looks an instance's series up writes its row only when the
    identity rules pass as written; otherwise it writes nothing and the rules decide: the
    name written another way is the study's (a second statement writes the row), another
    name flags the study and another modality joins its modalities (the transaction)."""
    from django.test.utils import CaptureQueriesContext

    study_uid, series_uid = generate_uid(), generate_uid()
    ingest(make_dataset(study_uid=study_uid, series_uid=series_uid), ct_modality, tmp_path)
    later = make_dataset(study_uid=study_uid, series_uid=series_uid, **changed)
    del later.InstanceNumber  # a NULL of the row's own type
    with CaptureQueriesContext(connection) as queries:
        result = ingest(later, ct_modality, tmp_path)
    assert result.outcome == services.IngestOutcome.STORED
    if connection.vendor == "postgresql":
        assert [query["sql"].split()[0].upper() for query in queries.captured_queries][:2] == written
    instance = Instance.objects.select_related("series__study").get(sop_instance_uid=later.SOPInstanceUID)
    study = instance.series.study
    assert (instance.series.series_uid, instance.instance_number) == (series_uid, None)
    assert study.patient_name_conflict == (changed.get("patient_name") == "Li^Si")
    assert study.modalities_in_study == ("CT\\PT" if "modality" in changed else "CT")
    assert services.series_instances(instance.series) == 2


@pytest.mark.skipif(connection.vendor != "postgresql", reason="prepared statements are PostgreSQL's")
@pytest.mark.django_db(transaction=True)
def test_the_statements_of_every_instance_are_prepared_once_per_connection(ct_modality, tmp_path):
    """PostgreSQL parses and plans the series lookup and the one statement once per
    connection (an association), not once per instance; nothing else is prepared."""

    def prepared_statements() -> set[str]:
        with connection.cursor() as cursor:
            cursor.execute("SELECT statement FROM pg_prepared_statements WHERE NOT from_sql")
            return {row[0] for row in cursor.fetchall()}

    # The test database's connection outlives one test: what earlier tests prepared on it is
    # not this test's (it made the assertion depend on the order the tests ran in).
    before = prepared_statements()
    study_uid, series_uid = generate_uid(), generate_uid()
    for number in range(1, 5):
        ds = make_dataset(study_uid=study_uid, series_uid=series_uid, instance_number=number)
        assert ingest(ds, ct_modality, tmp_path).outcome == services.IngestOutcome.STORED
    after = prepared_statements()
    assert len(after - before) <= 2
    assert {statement.split()[0].upper() for statement in after - before} <= {"SELECT", "WITH"}
    for number in range(5, 9):  # four more instances prepare nothing more
        ds = make_dataset(study_uid=study_uid, series_uid=series_uid, instance_number=number)
        assert ingest(ds, ct_modality, tmp_path).outcome == services.IngestOutcome.STORED
    assert prepared_statements() == after
    study = Study.objects.get(study_uid=study_uid)
    assert (services.study_instances(study), services.series_instances(study.series.get())) == (8, 8)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the pattern indexes are PostgreSQL's")
@pytest.mark.django_db
def test_an_instance_is_written_to_the_indexes_that_queries_read_and_no_other(ct_modality, tmp_path):
    """Each received instance adds an entry to every index of its table: the primary key,
    its series with its id (a series' instances, and those after the series' counted mark,
    migration 0017), its SOP Instance UID and storage key (unique, and looked up exactly,
    from lists and in key order), and none for LIKE matching, which no query does on them
    (migration 0016)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE tablename = 'cloudpacs_instance'")
        definitions = [row[0] for row in cursor.fetchall()]
    columns = sorted(definition.rsplit("(", 1)[1].rstrip(")") for definition in definitions)
    assert columns == ["id", "series_id, id", "sop_instance_uid", "storage_key"]
    # The key-ordered walk of the orphan sweep and the lookups still find the rows.
    ds = make_dataset()
    key = ingest(ds, ct_modality, tmp_path).instance.storage_key
    assert services.indexed_keys([key, "nothing/else.dcm"]) == {key}
    assert [found for found, *_ in services.indexed_files(after="")] == [key]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the one-statement path is PostgreSQL's")
@pytest.mark.django_db(transaction=True)
def test_an_instance_of_a_known_series_waits_for_no_lock_on_its_series_or_study(ct_modality, tmp_path):
    """The one statement writes the instance's own row only and locks no other: while
    another transaction holds the series' and the study's rows (as another association's
    statement held them until its commit, before the counters were folded by the sweep),
    even FOR UPDATE, which the foreign key's check at the commit waited for before
    migration 0018, it still commits."""
    import psycopg
    from django.db import connections

    from cloudpacs.models import Series

    study_uid, series_uid = generate_uid(), generate_uid()
    ingest(make_dataset(study_uid=study_uid, series_uid=series_uid), ct_modality, tmp_path)
    series = Series.objects.get(series_uid=series_uid)
    params = connections["default"].get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    holder = psycopg.connect(**params)
    outcome: list[object] = []

    def store_another() -> None:
        try:
            later = make_dataset(study_uid=study_uid, series_uid=series_uid, instance_number=2)
            outcome.append(ingest(later, ct_modality, tmp_path).outcome)
        except Exception as exc:  # reported by the assertion below
            outcome.append(exc)
        finally:
            connections.close_all()

    try:
        for table, pk in ((Series._meta.db_table, series.pk), (Study._meta.db_table, series.study_id)):
            holder.execute(f"SELECT id FROM {table} WHERE id = %s FOR UPDATE", [pk])  # noqa: S608
        writer = threading.Thread(target=store_another)
        writer.start()
        writer.join(30)
        assert outcome == [services.IngestOutcome.STORED]
    finally:
        holder.rollback()
        holder.close()
        writer.join(30)
    study = Study.objects.get(study_uid=study_uid)
    assert (services.study_instances(study), services.series_instances(study.series.get())) == (2, 2)


@pytest.mark.django_db
def test_it_accepts_a_stream_of_bare_dataset_bytes(storage_backend, ct_modality, tmp_path):
    ds = make_dataset()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    meta_length = int.from_bytes(data[140:144], "little")
    result = services.ingest_instance(
        io.BytesIO(data[144 + meta_length :]),
        transfer_syntax_uid=ExplicitVRLittleEndian,
        sop_class_uid=ds.SOPClassUID,
        sop_instance_uid=ds.SOPInstanceUID,
        modality=ct_modality,
    )
    assert result.outcome == services.IngestOutcome.STORED
    assert stored(result.instance.storage_key).PatientID == ds.PatientID


@pytest.mark.django_db
def test_a_re_send_is_a_duplicate_and_a_different_one_a_correction(storage_backend, ct_modality, tmp_path):
    ds = make_dataset()
    first = ingest(ds, ct_modality, tmp_path)
    again = ingest(ds, ct_modality, tmp_path)
    assert again.outcome == services.IngestOutcome.DUPLICATE
    assert again.instance.pk == first.instance.pk
    ds.PixelData = bytes(len(ds.PixelData))
    corrected = ingest(ds, ct_modality, tmp_path)
    assert corrected.outcome == services.IngestOutcome.REPLACED
    assert corrected.instance.pk == first.instance.pk
    assert corrected.instance.sha256 != first.instance.sha256
    assert Instance.objects.count() == 1
    assert services.study_instances(Study.objects.get()) == 1
    assert incoming_files() == []


@pytest.mark.django_db
def test_the_start_sweep_keeps_the_files_of_prior_versions(storage_backend, ct_modality, tmp_path):
    ds = make_dataset()
    first = ingest(ds, ct_modality, tmp_path)
    prior_key = first.instance.storage_key
    # The first content's staged file, as if its store had crashed after the commit.
    staged = staged_file(ds, tmp_path / "first-again.dcm")
    os.close(staged.lock)  # its process died: the kernel dropped its lock
    ds.PixelData = bytes(len(ds.PixelData))
    ingest(ds, ct_modality, tmp_path)
    assert Instance.objects.get().storage_key != prior_key
    services.sweep_orphan_files()
    assert storage.exists(prior_key)
    assert storage.exists(Instance.objects.get().storage_key)
    assert incoming_files() == []


@pytest.mark.django_db
def test_the_same_patient_id_at_two_facilities_is_two_patients(ct_modality, other_township, tmp_path):
    from tests.factories import make_modality

    other = make_modality(other_township, ExamKind.CT, "PINGLIANG_CT")
    ingest(make_dataset(patient_id="123"), ct_modality, tmp_path)
    ingest(make_dataset(patient_id="123"), other, tmp_path)
    assert Patient.objects.filter(patient_id="123").count() == 2


@pytest.mark.django_db
def test_it_decodes_an_iso_2022_chinese_name(ct_modality, tmp_path):
    ds = make_dataset(character_set=["", "ISO 2022 IR 58"])
    # PS3.5 Annex K.2's example, as a console encodes it (G1 designated by ESC $ ) A).
    ds["PatientName"].value = b"Zhang^Xiaodong=\x1b$)A\xd5\xc5^\x1b$)A\xd0\xa1\xb6\xab="
    ingest(ds, ct_modality, tmp_path)
    patient = Patient.objects.get()
    assert patient.name_alphabetic == "Zhang^Xiaodong"
    assert patient.name_ideographic == "张^小东"
    assert patient.display_name == "张小东"  # the ideographic group, shown without separators
    assert patient.name_initials == "zxd"


@pytest.mark.django_db
def test_a_missing_uid_stores_nothing(ct_modality, tmp_path):
    ds = make_dataset()
    del ds.SeriesInstanceUID
    with pytest.raises(services.MissingIdentifier):
        ingest(ds, ct_modality, tmp_path)
    assert not Instance.objects.exists()
    assert not list(Path(settings.STORAGE_ROOT).rglob("*.dcm"))
    assert incoming_files() == []


@pytest.mark.django_db
def test_a_sop_class_other_than_the_contexts_stores_nothing(ct_modality, tmp_path):
    ds = make_dataset()
    path = write_dataset(ds, tmp_path / "ct.dcm")
    with pytest.raises(services.SOPClassMismatch):
        services.ingest_instance(
            path,
            transfer_syntax_uid=ExplicitVRLittleEndian,
            sop_class_uid=DigitalXRayImageStorageForPresentation,
            sop_instance_uid=ds.SOPInstanceUID,
            modality=ct_modality,
        )
    assert not Instance.objects.exists()


@pytest.mark.django_db
def test_a_failure_while_indexing_leaves_no_file(storage_backend, ct_modality, tmp_path, monkeypatch):
    def broken_index(*args, **kwargs):
        raise RuntimeError("index went away")

    monkeypatch.setattr(services, "_index", broken_index)
    with pytest.raises(RuntimeError):
        ingest(make_dataset(), ct_modality, tmp_path)
    assert not list(Path(settings.STORAGE_ROOT).rglob("*.dcm"))
    assert list(storage.stored_objects()) == []
    assert incoming_files() == []


@pytest.mark.django_db
def test_the_start_sweep_removes_what_a_crash_left_behind(storage_backend, ct_modality, tmp_path):
    kept = ingest(make_dataset(), ct_modality, tmp_path)
    # A crash after the final link but before the index commit: a staged file, and its
    # final name, with no row.
    ds = make_dataset()
    staged = staged_file(ds, tmp_path / "crash.dcm")
    key = storage.key_for(ds.StudyInstanceUID, ds.SOPInstanceUID, staged.sha256)
    storage.publish(staged, key)
    os.close(staged.lock)  # its process died: the kernel dropped its lock
    # And a crash half-way through writing another one.
    (storage.incoming_dir() / "half.part").write_bytes(b"\x00" * 100)
    removed = services.sweep_orphan_files()
    assert removed == 3
    assert not storage.exists(key)
    assert storage.exists(kept.instance.storage_key)
    assert incoming_files() == []


@pytest.mark.django_db
def test_the_start_sweep_passes_over_a_file_another_process_is_storing(storage_backend, ct_modality, tmp_path):
    # The web server stores over STOW-RS while the receiver starts and sweeps: a file
    # linked at its key whose row is about to commit was taken for a crash's and removed,
    # and the row then pointed at nothing (a Success answered, the image lost).
    ds = make_dataset()
    staged = staged_file(ds, tmp_path / "storing.dcm")
    key = storage.key_for(ds.StudyInstanceUID, ds.SOPInstanceUID, staged.sha256)
    storage.publish(staged, key)
    # Another one still being written (the sweep's own descriptors are other open files,
    # so the lock held here stands for another process's).
    writing = storage.incoming_dir() / "writing.part"
    writing.write_bytes(b"\x00" * 100)
    held = os.open(writing, os.O_RDONLY)
    fcntl.flock(held, fcntl.LOCK_EX)
    try:
        assert services.sweep_orphan_files() == 0
        assert storage.exists(key)
        assert sorted(path.name for path in incoming_files()) == sorted([staged.path.name, "writing.part"])
    finally:
        os.close(held)
    storage.discard(staged)
    assert services.sweep_orphan_files() == 1  # the writer died: its half file goes
    assert storage.exists(key)


@pytest.mark.django_db
def test_a_study_becomes_arrived_only_after_the_delay(ct_modality, tmp_path):
    ingest(make_dataset(), ct_modality, tmp_path)
    now = timezone.now()
    assert services.claim_stable_studies(now, 10) == []
    claimed = services.claim_stable_studies(now + timedelta(seconds=11), 10)
    assert [study.status for study in claimed] == [Study.Status.ARRIVED]
    assert services.claim_stable_studies(now + timedelta(seconds=60), 10) == []


@pytest.mark.django_db
def test_a_study_is_claimed_exactly_the_delay_after_its_last_instance(ct_modality, tmp_path):
    first = ingest(make_dataset(), ct_modality, tmp_path)
    series = first.instance.series
    ids = {"study_uid": series.study.study_uid, "series_uid": series.series_uid}
    last = ingest(make_dataset(**ids, instance_number=2), ct_modality, tmp_path)
    # Another study, still receiving, whose last instance came later: not yet stable.
    ingest(make_dataset(), ct_modality, tmp_path)
    # The study's last arrival is the sweep's to write, as it counts the instances.
    counts.fold()
    quiet_since = Study.objects.get(pk=series.study_id).last_received_at
    assert quiet_since == last.instance.received_at > first.instance.received_at
    assert not services.has_stable_studies(quiet_since + timedelta(seconds=10, microseconds=-1), 10)
    assert services.claim_stable_studies(quiet_since + timedelta(seconds=10, microseconds=-1), 10) == []
    assert services.has_stable_studies(quiet_since + timedelta(seconds=10), 10)
    claimed = services.claim_stable_studies(quiet_since + timedelta(seconds=10), 10)
    assert [study.pk for study in claimed] == [series.study_id]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the tables' counts are PostgreSQL's")
@pytest.mark.django_db
def test_instances_of_a_known_series_update_no_row_until_the_sweep_folds_them_once(ct_modality, tmp_path):
    """Before the sweep's fold counted them, every instance updated its series' and its
    study's rows; now four instances update neither, and the fold updates each once.
    Counted in this transaction alone (pg_stat_xact_user_tables)."""
    first = ingest(make_dataset(), ct_modality, tmp_path)
    series = first.instance.series
    ids = {"study_uid": series.study.study_uid, "series_uid": series.series_uid}

    def updates() -> dict[str, int]:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT relname, n_tup_upd FROM pg_stat_xact_user_tables"
                " WHERE relname IN ('cloudpacs_study', 'cloudpacs_series')"
            )
            found = dict(cursor.fetchall())
        return {table: found.get(table, 0) for table in ("cloudpacs_study", "cloudpacs_series")}

    before = updates()
    for number in range(2, 6):
        ingest(make_dataset(**ids, instance_number=number), ct_modality, tmp_path)
    assert updates() == before
    assert counts.fold() == 5
    assert {table: count - before[table] for table, count in updates().items()} == {
        "cloudpacs_study": 1,
        "cloudpacs_series": 1,
    }
    assert Study.objects.get(pk=series.study_id).number_of_instances == 5


@pytest.mark.django_db(transaction=True)
def test_concurrent_sweeps_claim_each_study_once(ct_modality, tmp_path):
    for _ in range(5):
        ingest(make_dataset(), ct_modality, tmp_path)
    later = timezone.now() + timedelta(seconds=60)
    claimed: list[int] = []
    lock = threading.Lock()

    def sweep() -> None:
        try:
            studies = services.claim_stable_studies(later, 10)
            with lock:
                claimed.extend(study.pk for study in studies)
        finally:
            connection.close()

    threads = [threading.Thread(target=sweep) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claimed) == sorted(Study.objects.values_list("pk", flat=True))


@pytest.mark.django_db
def test_the_sweep_opens_one_consult_per_stable_study(ct_modality, dr_modality, tmp_path, settings):
    settings.STUDY_STABLE_SECONDS = 0
    ct = ingest(make_dataset(study_date=date(2025, 10, 2)), ct_modality, tmp_path)
    dx = ingest(
        make_dataset(sop_class_uid=DigitalXRayImageStorageForPresentation, modality="DX", StudyDate=""),
        dr_modality,
        tmp_path,
    )
    sweep_stable_studies.delay()
    sweep_stable_studies.delay()
    assert Consult.objects.count() == 2
    ct_consult = Consult.objects.get(study__study_uid=ct.instance.series.study.study_uid)
    assert ct_consult.kind == ExamKind.CT
    assert ct_consult.exam_date == date(2025, 10, 2)
    assert ct_consult.body_parts == 1
    assert ct_consult.priority == "routine"
    dx_study = Study.objects.get(study_uid=dx.instance.series.study.study_uid)
    dx_consult = Consult.objects.get(study=dx_study)
    assert dx_consult.kind == ExamKind.DR
    assert dx_consult.exam_date == timezone.localdate(dx_study.last_received_at)
    assert AuditEvent.objects.filter(action="consults.consult.created").count() == 2


@pytest.mark.django_db
def test_opening_a_consult_twice_returns_the_first(ct_modality, tmp_path):
    result = ingest(make_dataset(), ct_modality, tmp_path)
    study = Study.objects.get(pk=result.instance.series.study_id)
    assert open_consult_for_study(study) == open_consult_for_study(study)
    assert Consult.objects.count() == 1


@pytest.mark.django_db
def test_a_cr_image_makes_a_dr_consult_even_from_a_ct_registered_machine(ct_modality, tmp_path):
    from pydicom.uid import ComputedRadiographyImageStorage

    ds = make_dataset(sop_class_uid=ComputedRadiographyImageStorage, modality="CR", study_uid=generate_uid())
    result = ingest(ds, ct_modality, tmp_path)
    study = Study.objects.get(pk=result.instance.series.study_id)
    assert open_consult_for_study(study).kind == ExamKind.DR


@pytest.mark.django_db
def test_an_index_failure_on_a_re_send_keeps_the_stored_file(storage_backend, ct_modality, tmp_path, monkeypatch):
    from django.db import OperationalError

    ds = make_dataset()
    first = ingest(ds, ct_modality, tmp_path)

    def locked(*args, **kwargs):
        raise OperationalError("database is locked")

    monkeypatch.setattr(services, "_index", locked)
    with pytest.raises(OperationalError):
        ingest(ds, ct_modality, tmp_path)
    assert storage.exists(first.instance.storage_key)
    assert incoming_files() == []


@pytest.mark.django_db
def test_the_sweep_claims_in_short_batches_and_leaves_the_rest_to_its_next_run(
    ct_modality, tmp_path, settings, monkeypatch
):
    # Short transactions, so that a C-STORE's index transaction never waits long behind
    # one: each claim (and its consults, in the same transaction) takes at most SWEEP_BATCH.
    from consults import tasks

    settings.STUDY_STABLE_SECONDS = 0
    monkeypatch.setattr(tasks, "SWEEP_LIMIT", 20)
    for _ in range(25):
        ingest(make_dataset(), ct_modality, tmp_path)
    claimed: list[int] = []
    real_claim = tasks.claim_stable_studies

    def claim(*args, **kwargs):
        studies = real_claim(*args, **kwargs)
        claimed.append(len(studies))
        return studies

    monkeypatch.setattr(tasks, "claim_stable_studies", claim)
    first = tasks.sweep_stable_studies.delay().get()
    assert len(first) == 20
    assert claimed == [tasks.SWEEP_BATCH, tasks.SWEEP_BATCH]
    assert Study.objects.filter(status=Study.Status.RECEIVING).count() == 5
    # Every claimed study has its consult and its instances' metadata.
    assert Consult.objects.count() == 20
    assert Instance.objects.filter(metadata__isnull=False).count() == 20
    assert len(tasks.sweep_stable_studies.delay().get()) == 5
    assert Consult.objects.count() == 25


@pytest.mark.django_db(transaction=True)
def test_the_file_is_durable_before_the_index_is_written_or_the_instance_answered(
    storage_backend, ct_modality, tmp_path, monkeypatch
):
    """The file is published (synced; on the object store, PUT) on a thread of its own
    while the tags are read and the series looked up. The index's first write waits for it
    (data durable, then the index), but for an instance of a known series on PostgreSQL
    and local disk, whose row commits with its UnsyncedFile row once the file is whole at
    its key, while its fsync runs (tests/test_ingest_unsynced.py); either way the answer
    comes after both."""
    events: list[str] = []
    threads: list[threading.Thread] = []
    real_publish = storage.publish

    def publish(staged, key, linked=None):
        def link(created):
            events.append("linked")
            if linked is not None:
                linked(created)

        created = real_publish(staged, key, link)
        threads.append(threading.current_thread())
        events.append("published")
        return created

    def record(execute, sql, params, many, context):
        events.append(sql.split()[0].upper())
        return execute(sql, params, many, context)

    monkeypatch.setattr(storage, "publish", publish)
    study_uid, series_uid = generate_uid(), generate_uid()
    ingest(make_dataset(study_uid=study_uid, series_uid=series_uid), ct_modality, tmp_path)
    overlapped = connection.vendor == "postgresql" and storage_backend == "local"
    for number in (2, 3):
        events.clear()
        with connection.execute_wrapper(record):
            later = make_dataset(study_uid=study_uid, series_uid=series_uid, instance_number=number)
            result = ingest(later, ct_modality, tmp_path)
        assert result.outcome == services.IngestOutcome.STORED
        writes = [index for index, event in enumerate(events) if event in {"INSERT", "UPDATE", "WITH"}]
        assert writes and "published" in events
        assert events.index("linked" if overlapped else "published") < writes[0], events
        assert storage.exists(result.instance.storage_key)
    assert threads and all(thread is not threading.current_thread() for thread in threads)
    assert incoming_files() == []


@pytest.mark.django_db
def test_a_received_dataset_is_read_from_its_staged_file_once(ct_modality, tmp_path, monkeypatch):
    """Its Study Instance UID (the key published ahead) and its tags come from one read of
    the staged file, not from a read of its first elements and then another of the whole."""
    real_open = open
    reads: list[str] = []

    def counting_open(file, mode="r", *args, **kwargs):
        if "r" in mode and Path(file).parent == storage.incoming_dir():
            reads.append(str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", counting_open)
    result = ingest(make_dataset(), ct_modality, tmp_path)
    assert result.outcome == services.IngestOutcome.STORED
    assert len(reads) == 1, reads


@pytest.mark.django_db
def test_a_key_guessed_wrong_ahead_is_removed_and_the_right_one_stored(
    storage_backend, ct_modality, tmp_path, monkeypatch
):
    ds = make_dataset()
    monkeypatch.setattr(services, "_study_uid_ahead", lambda *args: "1.2.3.999")
    result = ingest(ds, ct_modality, tmp_path)
    assert result.outcome == services.IngestOutcome.STORED
    assert result.instance.storage_key == storage.key_for(
        ds.StudyInstanceUID, ds.SOPInstanceUID, result.instance.sha256
    )
    assert [item.key for item in storage.stored_objects()] == [result.instance.storage_key]
    assert stored(result.instance.storage_key).SOPInstanceUID == ds.SOPInstanceUID
    assert incoming_files() == []


@pytest.mark.django_db
def test_a_refused_dataset_published_ahead_leaves_no_file(storage_backend, ct_modality, tmp_path):
    """Its Study Instance UID is read ahead and its file published while its tags are read;
    the tags refuse it, and the file goes."""
    ds = make_dataset()
    path = write_dataset(ds, tmp_path / "ct.dcm")
    offset = storage.part10_dataset_offset(path.read_bytes()[:4096])
    read = services._read_dataset(path, offset, ExplicitVRLittleEndian, ds.SOPInstanceUID)
    assert services._study_uid_ahead(read) == ds.StudyInstanceUID
    _push_refused(ds, ct_modality, tmp_path)
    assert not Instance.objects.exists()
    assert list(storage.stored_objects()) == []
    assert incoming_files() == []


def _push_refused(ds, modality, tmp_path):
    """The dataset sent with a SOP Class the data does not bear: published ahead under
    its key, then refused once its tags are read."""
    path = write_dataset(ds, tmp_path / f"refused-{ds.SOPInstanceUID}.dcm")
    with pytest.raises(services.SOPClassMismatch):
        services.ingest_instance(
            path,
            transfer_syntax_uid=ExplicitVRLittleEndian,
            sop_class_uid=DigitalXRayImageStorageForPresentation,
            sop_instance_uid=ds.SOPInstanceUID,
            modality=modality,
        )


def _study_files(ds) -> list[Path]:
    directory = storage.path_for(storage.key_for(ds.StudyInstanceUID, ds.SOPInstanceUID, "0" * 64)).parent
    return list(directory.glob("*.dcm")) if directory.is_dir() else []


def _wait_for(condition, what: str) -> None:
    for _ in range(1000):
        if condition():
            return
        threading.Event().wait(0.01)
    raise AssertionError(f"waited 10 s for {what}")


@pytest.mark.django_db
def test_a_refused_push_keeps_the_file_an_identical_resend_indexed_meanwhile(ct_modality, tmp_path, monkeypatch):
    """One association's push is published ahead (the name is new) and then refused; in
    between, the same bytes from another association found the name there and indexed
    it. The refused one must not remove the file the other's row points at."""
    ds = make_dataset()
    real_read = services._read_indexed_tags
    indexed: list[services.IngestResult] = []
    resending = threading.Event()

    def read_tags(*args):
        if not resending.is_set():
            resending.set()
            _wait_for(lambda: _study_files(ds), "the refused push's name")
            indexed.append(ingest(ds, ct_modality, tmp_path))
        return real_read(*args)

    monkeypatch.setattr(services, "_read_indexed_tags", read_tags)
    _push_refused(ds, ct_modality, tmp_path)
    [result] = indexed
    assert result.outcome == services.IngestOutcome.STORED
    assert storage.exists(result.instance.storage_key)
    assert stored(result.instance.storage_key).SOPInstanceUID == ds.SOPInstanceUID
    assert incoming_files() == []


@pytest.mark.django_db(transaction=True)
def test_an_identical_resend_puts_back_the_name_a_refused_push_removed(ct_modality, tmp_path, monkeypatch):
    """The other order: the refused push removes its name after the re-send found it there
    but before the re-send's row is committed; the re-send links it again from its staged
    file before it answers."""
    ds = make_dataset()
    real_read, real_index = services._read_indexed_tags, services._index
    resend_published, refused_done = threading.Event(), threading.Event()
    outcome: list[object] = []

    def index(tags, staged, key, transfer_syntax_uid, modality, durable, *linked):
        durable()  # the re-send's publish: the name was there (made by the refused push)
        resend_published.set()
        assert refused_done.wait(10)
        return real_index(tags, staged, key, transfer_syntax_uid, modality, durable, *linked)

    def resend():
        try:
            outcome.append(ingest(ds, ct_modality, tmp_path))
        except BaseException as exc:  # reported below
            outcome.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=resend)

    def read_tags(*args):
        if not thread.is_alive() and not outcome:
            _wait_for(lambda: _study_files(ds), "the refused push's name")
            thread.start()
            assert resend_published.wait(10)
        return real_read(*args)

    monkeypatch.setattr(services, "_read_indexed_tags", read_tags)
    monkeypatch.setattr(services, "_index", index)
    try:
        _push_refused(ds, ct_modality, tmp_path)
    finally:
        refused_done.set()
        thread.join(20)
    [result] = outcome
    assert isinstance(result, services.IngestResult), result
    assert result.outcome == services.IngestOutcome.STORED
    assert stored(result.instance.storage_key).SOPInstanceUID == ds.SOPInstanceUID
    assert incoming_files() == []


def test_publish_syncs_the_file_and_its_directory_before_it_returns(tmp_path, monkeypatch):
    # By inode: the file may be synced through the descriptor of its staged name.
    synced: list[tuple[int, int]] = []
    real_fsync = os.fsync

    def fsync(fd):
        real_fsync(fd)
        status = os.fstat(fd)
        synced.append((status.st_dev, status.st_ino))

    monkeypatch.setattr(os, "fsync", fsync)
    ds = make_dataset()
    staged = staged_file(ds, tmp_path / "ct.dcm")
    key = storage.key_for(ds.StudyInstanceUID, ds.SOPInstanceUID, staged.sha256)
    assert storage.publish(staged, key) is True
    final = storage.path_for(key)
    for path in (final, final.parent):
        status = path.stat()
        assert (status.st_dev, status.st_ino) in synced
    storage.discard(staged)


def test_a_received_file_is_staged_and_published_without_a_stat_or_a_second_open(tmp_path, monkeypatch):
    # The receiver's way: pynetdicom's file on the store's filesystem, adopted, then linked
    # and fsynced through the descriptor that holds its lock. On main: three stats (the
    # spool looked for, both sides' devices compared) and the file opened again to fsync.
    ds = make_dataset()
    receiving = Path(settings.STORAGE_ROOT) / ".receiving"
    receiving.mkdir(parents=True)
    source = write_dataset(ds, receiving / "received.dcm")
    storage.incoming_dir()
    storage._ensure_dir(storage.path_for(storage.key_for(ds.StudyInstanceUID, ds.SOPInstanceUID, "0" * 64)).parent)
    calls: list[str] = []
    real_stat, real_open = os.stat, os.open
    here = threading.get_ident()

    def stat(*args, **kwargs):
        if threading.get_ident() == here:
            calls.append("stat")
        return real_stat(*args, **kwargs)

    def open_(*args, **kwargs):
        if threading.get_ident() == here:
            calls.append("open")
        return real_open(*args, **kwargs)

    monkeypatch.setattr(os, "stat", stat)
    monkeypatch.setattr(os, "open", open_)
    staged = storage.stage(
        source,
        sop_class_uid=ds.SOPClassUID,
        sop_instance_uid=ds.SOPInstanceUID,
        transfer_syntax_uid=ds.file_meta.TransferSyntaxUID,
        adopt=True,
    )
    key = storage.key_for(ds.StudyInstanceUID, ds.SOPInstanceUID, staged.sha256)
    assert storage.publish(staged, key) is True
    monkeypatch.undo()
    assert calls == ["open"]  # the lock's descriptor
    assert not source.exists() and storage.path_for(key).samefile(staged.path)
    storage.discard(staged)


def test_a_directory_another_process_made_has_its_entry_synced_before_a_file_is_published_into_it(
    tmp_path, monkeypatch
):
    # Another receiver process made the study's directory and has not synced its parent
    # yet: this process's first file there syncs it (main: only the file and the study's
    # directory, so a power cut could lose the directory with the acknowledged file).
    ds = make_dataset()
    staged = staged_file(ds, tmp_path / "ct.dcm")
    key = storage.key_for(ds.StudyInstanceUID, ds.SOPInstanceUID, staged.sha256)
    directory = storage.path_for(key).parent
    directory.mkdir(parents=True)
    synced: list[Path] = []
    real_sync = storage._fsync_dir
    monkeypatch.setattr(storage, "_fsync_dir", lambda path: synced.append(Path(path)) or real_sync(path))
    assert storage.publish(staged, key) is True
    assert directory.parent in synced and directory.parent.parent in synced and directory in synced
    synced.clear()
    again = make_dataset(study_uid=ds.StudyInstanceUID, instance_number=2)
    second = staged_file(again, tmp_path / "second.dcm")
    assert storage.publish(second, storage.key_for(again.StudyInstanceUID, again.SOPInstanceUID, second.sha256))
    # Once per process: the next file syncs only itself and the study's directory.
    assert synced == [directory]
    for file in (staged, second):
        storage.discard(file)


def test_a_study_directory_removed_under_the_process_is_made_again_for_its_next_file(tmp_path):
    import shutil

    first, second = (make_dataset(study_uid="1.2.3.4", instance_number=number) for number in (1, 2))
    staged = staged_file(first, tmp_path / "first.dcm")
    key = storage.key_for(first.StudyInstanceUID, first.SOPInstanceUID, staged.sha256)
    assert storage.publish(staged, key) is True
    shutil.rmtree(storage.path_for(key).parent)
    again = staged_file(second, tmp_path / "second.dcm")
    key = storage.key_for(second.StudyInstanceUID, second.SOPInstanceUID, again.sha256)
    assert storage.publish(again, key) is True
    assert storage.path_for(key).is_file()
    for file in (staged, again):
        storage.discard(file)


def staged_study(tmp_path: Path, count: int) -> list[tuple[storage.StagedFile, str]]:
    """`count` instances of one study staged, with their keys, and the study's directory
    made (its own fsyncs done)."""
    study_uid = generate_uid()
    staged = []
    for number in range(count):
        ds = make_dataset(study_uid=study_uid, instance_number=number + 1)
        file = staged_file(ds, tmp_path / f"{number}.dcm")
        staged.append((file, storage.key_for(study_uid, ds.SOPInstanceUID, file.sha256)))
    storage._ensure_dir(storage.path_for(staged[0][1]).parent)
    return staged


def test_publishes_into_one_directory_share_its_fsyncs_each_begun_after_their_names(tmp_path, monkeypatch):
    # Three names made while the directory's fsync for the first runs wait for the next,
    # which covers all three: two fsyncs for four names (main: four, one each).
    files = staged_study(tmp_path, 4)
    syncs: list[tuple[float, float]] = []
    linked: dict[str, float] = {}
    first_syncing, release = threading.Event(), threading.Event()
    real_link, real_sync = os.link, storage._fsync_dir

    def link(source, destination, *args, **kwargs):
        real_link(source, destination, *args, **kwargs)
        linked[str(destination)] = time.monotonic()

    def fsync_dir(path):
        began = time.monotonic()
        if not syncs and not first_syncing.is_set():
            first_syncing.set()
            assert release.wait(30)
        real_sync(path)
        syncs.append((began, time.monotonic()))

    monkeypatch.setattr(os, "link", link)
    monkeypatch.setattr(storage, "_fsync_dir", fsync_dir)
    returned: dict[str, float] = {}

    def publish(staged: storage.StagedFile, key: str) -> None:
        assert storage.publish(staged, key) is True
        returned[key] = time.monotonic()

    threads = [threading.Thread(target=publish, args=files[0])]
    threads[0].start()
    assert first_syncing.wait(30)
    threads += [threading.Thread(target=publish, args=file) for file in files[1:]]
    for thread in threads[1:]:
        thread.start()
    assert wait_for(lambda: len(linked) == 4, 30)
    time.sleep(0.05)
    release.set()
    for thread in threads:
        thread.join(30)
    assert len(returned) == 4
    assert len(syncs) == 2
    for staged, key in files:
        name = str(storage.path_for(key))
        # A fsync of the directory began after the name was made and ended before publish returned.
        assert any(linked[name] <= began and ended <= returned[key] for began, ended in syncs)
        storage.discard(staged)


def test_a_failed_directory_fsync_fails_every_publish_it_was_to_cover(tmp_path, monkeypatch):
    files = staged_study(tmp_path, 4)
    calls: list[str] = []
    first_syncing, release = threading.Event(), threading.Event()
    real_sync = storage._fsync_dir

    def fsync_dir(path):
        calls.append(str(path))
        if len(calls) == 1:
            first_syncing.set()
            assert release.wait(30)
        elif len(calls) == 2:
            raise OSError(errno.EIO, "Input/output error")
        real_sync(path)

    monkeypatch.setattr(storage, "_fsync_dir", fsync_dir)
    outcomes: dict[int, object] = {}

    def publish(number: int) -> None:
        try:
            outcomes[number] = storage.publish(*files[number])
        except OSError as exc:
            outcomes[number] = exc

    first = threading.Thread(target=publish, args=(0,))
    first.start()
    assert first_syncing.wait(30)
    others = [threading.Thread(target=publish, args=(number,)) for number in (1, 2)]
    for thread in others:
        thread.start()
    assert wait_for(lambda: all(storage.path_for(files[n][1]).exists() for n in (1, 2)), 30)
    time.sleep(0.05)
    release.set()
    for thread in [first, *others]:
        thread.join(30)
    assert outcomes[0] is True
    for number in (1, 2):
        assert isinstance(outcomes[number], OSError) and outcomes[number].errno == errno.EIO
    # The next name gets a fsync of its own, which succeeds.
    publish(3)
    assert outcomes[3] is True and len(calls) == 3
    for staged, _ in files:
        storage.discard(staged)


# --- The tags read from a received file ---------------------------------------------------


def test_the_tag_reader_is_pinned_to_the_installed_pydicom():
    # If this fails after a pydicom upgrade, compare Dataset.__getitem__, __setitem__,
    # __getattr__ and get with what services._Elements does in their place, then update
    # services.DATASET_PIN. Until then the tags are read through pydicom's Dataset.
    import pydicom

    assert pydicom.__version__ == services.DATASET_PIN.version
    assert services.DATASET_PIN.stock_sources() == services.DATASET_PIN.sources
    assert services.DATASET_PIN.compatible()


def rich_dataset(transfer_syntax_uid: str):
    """Elements of each kind the lean conversion passes on to pydicom: a character set,
    private elements (top level and in an item), sequences, an ambiguous VR (US or SS,
    resolved by Pixel Representation), a deferred bulk value, an empty Type 2 value."""
    from pydicom.dataset import Dataset

    ds = make_dataset(
        character_set="GB18030",
        patient_name="Zhang^San=张^三",
        transfer_syntax_uid=transfer_syntax_uid,
        InstitutionName="漩涡镇中心卫生院",
        StudyDescription="胸部平扫",
    )
    ds.PixelRepresentation = 1
    ds.SmallestImagePixelValue = -5
    ds.AccessionNumber = ""
    del ds.StationName
    ds.private_block(0x0019, "YUNYING TEST", create=True).add_new(0x01, "LO", "私有")
    item = Dataset()
    item.ReferencedSOPClassUID = ds.SOPClassUID
    item.ReferencedSOPInstanceUID = generate_uid()
    item.private_block(0x0029, "YUNYING ITEM", create=True).add_new(0x02, "SH", "项目")
    ds.ReferencedImageSequence = [item]
    other = Dataset()
    other.PatientID = "X-1"
    other.IssuerOfPatientID = "乡镇"
    ds.OtherPatientIDsSequence = [other]
    ds.add_new(0x00091010, "OB", b"\x01" * 5000)
    return ds


def read_tags(path: Path, lean: bool, monkeypatch) -> tuple[dict, list]:
    monkeypatch.setattr(services.DATASET_PIN, "_compatible", lean)
    ds = dcmread(path, defer_size=4096)
    elements = services._Elements(ds)
    assert elements.lean is lean
    values = {keyword: elements.value(keyword, tag) for keyword, tag in services.INDEXED_TAG_NUMBERS}
    services._decode_every_element(ds, elements)
    every = [(e.tag, e.VR, e.value, e.private_creator, e.is_undefined_length) for e in ds.iterall()]
    return values, every


@pytest.mark.parametrize(
    "syntax", ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"]
)
def test_the_tags_are_read_as_pydicom_reads_them(syntax, tmp_path, monkeypatch):
    path = write_dataset(rich_dataset(syntax), tmp_path / "rich.dcm")
    values, every = read_tags(path, True, monkeypatch)
    assert (values, every) == read_tags(path, False, monkeypatch)
    assert values["PatientName"] == "Zhang^San=张^三"
    assert values["InstitutionName"] == "漩涡镇中心卫生院"
    assert values["OtherPatientIDsSequence"][0].IssuerOfPatientID == "乡镇"
    assert values["AccessionNumber"] == ""
    assert values["StationName"] is None
    by_tag = {tag: (vr, value, creator) for tag, vr, value, creator, _ in every}
    assert by_tag[0x00280106] == ("SS", -5, None)
    # Implicit VR: a private element's VR is unknown (UN), its creator still found.
    assert by_tag[0x00191001][2] == "YUNYING TEST"
    assert by_tag[0x00291002][2] == "YUNYING ITEM"
