"""The instance counters: written by the sweep's fold, exact for every reader before it
(cloudpacs.counts). A console that stores and then asks sees its instances counted; four
associations on one series end with the exact counts; a late instance makes an arrived
study updated once the sweep has counted it; an idle archive's pages probe nothing."""

from __future__ import annotations

import os
import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage

from cloudpacs import counts, services
from cloudpacs.models import Series, Study
from dicomnode.queryretrieve import OPENED
from facilities.models import ApplicationEntity
from tests.dicomweb_support import ingest, token_for
from tests.factories import make_dataset
from tests.test_query_retrieve_scp import find, query

pytestmark = pytest.mark.django_db(transaction=True)


def store(address: tuple[str, int], calling: str, datasets: list) -> list[int]:
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    assoc = ae.associate(address[0], address[1], ae_title="CLOUDPACS", evt_handlers=OPENED)
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(ds).Status) for ds in datasets]
    finally:
        assoc.release()


def asked(address: tuple[str, int], technologist, study_uid: str, series_uid: str) -> dict[str, int]:
    """What C-FIND (study and series level) and QIDO-RS (studies, series) answer as counts."""
    found = {}
    (study,), status = find(
        address,
        "XUANWO_WS",
        query("STUDY", StudyInstanceUID=study_uid, NumberOfStudyRelatedInstances="", NumberOfStudyRelatedSeries=""),
    )
    assert status == 0x0000
    found["cfind study"] = int(study.NumberOfStudyRelatedInstances)
    found["cfind series of study"] = int(study.NumberOfStudyRelatedSeries)
    (series,), status = find(
        address,
        "XUANWO_WS",
        query("SERIES", StudyInstanceUID=study_uid, SeriesInstanceUID=series_uid, NumberOfSeriesRelatedInstances=""),
    )
    assert status == 0x0000
    found["cfind series"] = int(series.NumberOfSeriesRelatedInstances)
    client = Client(HTTP_AUTHORIZATION=f"Token {token_for(technologist)}", HTTP_ACCEPT="application/dicom+json")
    (qido_study,) = client.get("/dicomweb/studies", {"StudyInstanceUID": study_uid}).json()
    found["qido study"] = qido_study["00201208"]["Value"][0]
    (qido_series,) = client.get(f"/dicomweb/studies/{study_uid}/series").json()
    found["qido series"] = qido_series["00201209"]["Value"][0]
    return found


def test_a_console_that_stores_and_then_asks_sees_its_instances_counted_before_any_sweep(
    receiver, township, ct_modality, technologist
):
    ApplicationEntity.objects.create(
        ae_title="XUANWO_WS", role=ApplicationEntity.Role.WORKSTATION, facility=township, may_query=True
    )
    study_uid, series_uid = generate_uid(), generate_uid()
    datasets = [make_dataset(study_uid=study_uid, series_uid=series_uid, instance_number=n) for n in range(1, 4)]
    assert store(receiver, ct_modality.ae_title, datasets) == [0x0000] * 3
    # No sweep has run: the stored counters count none of the three.
    study = Study.objects.get(study_uid=study_uid)
    assert (study.number_of_instances, Series.objects.get(series_uid=series_uid).number_of_instances) == (0, 0)
    assert asked(receiver, technologist, study_uid, series_uid) == {
        "cfind study": 3,
        "cfind series of study": 1,
        "cfind series": 3,
        "qido study": 3,
        "qido series": 3,
    }
    # One more, and the answers follow at once; the sweep's fold then changes no answer.
    assert store(receiver, ct_modality.ae_title, [make_dataset(study_uid=study_uid, series_uid=series_uid)]) == [0]
    assert asked(receiver, technologist, study_uid, series_uid)["cfind study"] == 4
    assert counts.fold() == 4
    study.refresh_from_db()
    assert study.number_of_instances == 4
    assert set(asked(receiver, technologist, study_uid, series_uid).values()) == {1, 4}


def test_four_associations_on_one_series_end_with_the_exact_counts(receiver, ct_modality):
    study_uid, series_uid = generate_uid(), generate_uid()
    # The series exists first, as when a console's associations share one.
    assert store(receiver, ct_modality.ae_title, [make_dataset(study_uid=study_uid, series_uid=series_uid)]) == [0]
    pushes = [
        [make_dataset(study_uid=study_uid, series_uid=series_uid, instance_number=10 * n + i) for i in range(10)]
        for n in range(4)
    ]
    results: list[list[int]] = []
    threads = [
        threading.Thread(target=lambda p=p: results.append(store(receiver, ct_modality.ae_title, p))) for p in pushes
    ]
    folds: list[int] = []
    stop = threading.Event()

    def sweeping() -> None:
        # The sweep folding meanwhile, as it does once a second.
        from django.db import connections

        try:
            while not stop.is_set():
                folds.append(counts.fold())
        finally:
            connections.close_all()

    sweeper = threading.Thread(target=sweeping)
    sweeper.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    stop.set()
    sweeper.join(60)
    assert results == [[0x0000] * 10] * 4
    study = Study.objects.get(study_uid=study_uid)
    series = Series.objects.get(series_uid=series_uid)
    assert (services.study_instances(study), services.series_instances(series)) == (41, 41)
    folds.append(counts.fold())
    assert sum(folds) == 41
    study.refresh_from_db()
    series.refresh_from_db()
    assert (study.number_of_instances, study.number_of_series, series.number_of_instances) == (41, 1, 41)


def test_a_late_instance_makes_an_arrived_study_updated_after_the_sweep(ct_modality, tmp_path):
    study_uid, series_uid = generate_uid(), generate_uid()
    first = ingest(make_dataset(study_uid=study_uid, series_uid=series_uid), ct_modality, tmp_path)
    later = timezone.now() + timedelta(seconds=60)
    (claimed,) = services.claim_stable_studies(later, 10)
    assert (claimed.status, claimed.number_of_instances, claimed.last_received_at) == (
        Study.Status.ARRIVED,
        1,
        first.received_at,
    )
    late = ingest(make_dataset(study_uid=study_uid, series_uid=series_uid, instance_number=2), ct_modality, tmp_path)
    study = Study.objects.get(pk=claimed.pk)
    # Counted by every reader at once; the status and the last arrival wait for the sweep.
    assert (study.status, services.study_instances(study)) == (Study.Status.ARRIVED, 2)
    assert services.claim_stable_studies(later + timedelta(seconds=60), 10) == []
    study.refresh_from_db()
    assert (study.status, study.number_of_instances, study.last_received_at) == (
        Study.Status.UPDATED,
        2,
        late.received_at,
    )


def qido_counts(technologist) -> tuple[list[int], list[str]]:
    """QIDO-RS's counts (the study's, then its series'), and the statements that probed the
    instance table by series for them."""
    client = Client(HTTP_AUTHORIZATION=f"Token {token_for(technologist)}", HTTP_ACCEPT="application/dicom+json")
    statements: list[str] = []

    def recorded(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        statements.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(recorded):
        (study,) = client.get("/dicomweb/studies").json()
        series = client.get("/dicomweb/series").json()
        (instance, *_rest) = client.get("/dicomweb/instances").json()
    found = [study["00201208"]["Value"][0], *sorted(row["00201209"]["Value"][0] for row in series)]
    assert instance["00201208"]["Value"][0] == found[0]
    probes = [sql for sql in statements if '"cloudpacs_instance"' in sql and "COUNT(" in sql.upper()]
    return found, probes


def test_an_idle_archives_qido_pages_probe_no_series_for_its_instances_and_stay_exact_mid_push(
    ct_modality, technologist, tmp_path
):
    study_uid, series_uids = generate_uid(), [generate_uid(), generate_uid()]
    for n, series_uid in enumerate(series_uids * 2):
        ingest(make_dataset(study_uid=study_uid, series_uid=series_uid, instance_number=n + 1), ct_modality, tmp_path)
    # Mid-push: none folded yet; the pages probe and count all four.
    found, probes = qido_counts(technologist)
    assert found == [4, 2, 2]
    assert probes
    # Folded: the archive is idle, the stored counters are exact and nothing is probed.
    assert counts.fold() == 4
    assert qido_counts(technologist) == ([4, 2, 2], [])
    # One more instance, not folded: counted at once (its Success came before the pages).
    ingest(make_dataset(study_uid=study_uid, series_uid=series_uids[0], instance_number=9), ct_modality, tmp_path)
    found, probes = qido_counts(technologist)
    assert found == [5, 2, 3]
    assert probes
    assert counts.fold() == 1
    assert qido_counts(technologist) == ([5, 2, 3], [])


@pytest.mark.parametrize("per_row", [0, 1, 2, 3, 100])
def test_the_instances_above_the_mark_are_counted_exactly_below_and_above_the_readers_cap(
    per_row, ct_modality, tmp_path, monkeypatch
):
    """A reader reads the instances above the mark up to a cap for each series or study it asks
    about (PENDING_PER_SERIES, PENDING_PER_STUDY); with more (a backlog: the sweep stopped)
    it probes its own series instead, and answers the same exact counts."""
    asked_uid, other_uid = generate_uid(), generate_uid()
    series_uids = [generate_uid(), generate_uid()]
    first = ingest(make_dataset(study_uid=asked_uid, series_uid=series_uids[0]), ct_modality, tmp_path)
    assert counts.fold() == 1
    # Above the mark: two more of the asked study's first series, one of its second, and
    # three of another study (a backlog of six; the asked study holds three of them).
    for n, series_uid in enumerate([series_uids[0], series_uids[0], series_uids[1]]):
        ingest(make_dataset(study_uid=asked_uid, series_uid=series_uid, instance_number=n + 2), ct_modality, tmp_path)
    for n in range(3):
        ingest(make_dataset(study_uid=other_uid, instance_number=n + 1), ct_modality, tmp_path)
    monkeypatch.setattr(counts, "PENDING_PER_SERIES", per_row)
    monkeypatch.setattr(counts, "PENDING_PER_STUDY", per_row)
    asked = Study.objects.get(study_uid=asked_uid)
    other = Study.objects.get(study_uid=other_uid)
    series = [Series.objects.get(series_uid=uid) for uid in series_uids]
    assert (asked.number_of_instances, series[0].counted_through) == (1, first.pk)
    # One study or series asked: a cap of per_row, below the backlog of six but at 100; both:
    # 2 * per_row, at 3 just the six.
    assert counts.exact_by_study([asked.pk]) == {asked.pk: 4}
    assert counts.exact_by_study([asked.pk, other.pk]) == {asked.pk: 4, other.pk: 3}
    assert counts.exact_by_series([series[0].pk]) == {series[0].pk: 3}
    assert counts.exact_by_series([s.pk for s in series]) == {series[0].pk: 3, series[1].pk: 1}
    assert counts.fold() == 6
    assert counts.exact_by_study([asked.pk, other.pk]) == {asked.pk: 4, other.pk: 3}


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the writers are looked for in PostgreSQL's pg_locks")
def test_a_fold_waits_for_its_own_databases_writers_not_for_a_twin_databases():
    """Two databases made from one template hold their instance tables under the same
    relation number (so do pytest-xdist's per-worker test databases): a transaction
    writing instances in one must not hold back the other's fold, while one in its own
    database still does."""
    import psycopg

    params = connection.settings_dict
    server = {"host": params["HOST"] or None, "port": params["PORT"] or None, "user": params["USER"] or None}
    names = [f"yunying_fold_{name}_{os.getpid()}" for name in ("template", "twin", "own")]
    template, twin, own = names
    with psycopg.connect(dbname="postgres", autocommit=True, **server) as admin:
        for name in names:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{template}"')
        with psycopg.connect(dbname=template, autocommit=True, **server) as setup:
            setup.execute("CREATE TABLE cloudpacs_instance (id bigint)")
        admin.execute(f'CREATE DATABASE "{twin}" TEMPLATE "{template}"')
        admin.execute(f'CREATE DATABASE "{own}" TEMPLATE "{template}"')
        try:
            with (
                psycopg.connect(dbname=twin, **server) as twin_writer,
                psycopg.connect(dbname=own, **server) as own_writer,
                psycopg.connect(dbname=own, autocommit=True, **server) as folder,
            ):
                numbers = {
                    name: conn.execute("SELECT 'cloudpacs_instance'::regclass::oid").fetchone()[0]
                    for name, conn in (("twin", twin_writer), ("own", own_writer))
                }
                assert numbers["twin"] == numbers["own"]
                twin_writer.execute("INSERT INTO cloudpacs_instance VALUES (1)")  # left open
                with folder.cursor() as cursor:
                    assert counts._writers_done(0.2, cursor) is True
                    own_writer.execute("INSERT INTO cloudpacs_instance VALUES (2)")  # left open
                    assert counts._writers_done(0.2, cursor) is False
                    own_writer.commit()
                    assert counts._writers_done(0.2, cursor) is True
                twin_writer.rollback()
        finally:
            for name in names:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
