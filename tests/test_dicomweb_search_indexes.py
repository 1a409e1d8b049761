"""The QIDO-RS search indexes (migration cloudpacs 0003): it applies and reverts on
PostgreSQL and SQLite; on PostgreSQL the person name and Patient ID searches can use their
indexes (the indexed expressions are the ones the search builds); a deep offset answers
the same studies as a shallow one."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import Client

from cloudpacs.dicomweb import qido
from cloudpacs.models import Patient
from tests.dicomweb_support import token_for
from tests.factories import make_study

NAME_INDEXES = {
    "patient_name_alphabetic_upper",
    "patient_name_ideographic_upper",
    "patient_name_ideographic_joined",
    "patient_name_phonetic_upper",
}
MODEL_INDEXES = {"patient_id_search", "study_order", "study_facility_order"}
on_postgresql = pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's planner and indexes")


def index_names() -> set[str]:
    with connection.cursor() as cursor:
        names: set[str] = set()
        for table in ("cloudpacs_patient", "cloudpacs_study"):
            names |= set(connection.introspection.get_constraints(cursor, table))
    return names


def migrate(target: str) -> None:
    executor = MigrationExecutor(connection)
    executor.migrate([("cloudpacs", target)])


def migrate_to_latest() -> None:
    """Back to every app's latest migration, not only cloudpacs 0003: reverting cloudpacs
    reverted the other apps' migrations that depend on it (consults' template library), and
    the tests after this one need all their tables and columns."""
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())


@pytest.mark.django_db(transaction=True)
def test_the_search_index_migration_applies_and_reverts():
    assert index_names() >= MODEL_INDEXES
    migrate("0002_instance_metadata")
    try:
        names = index_names()
        assert not (MODEL_INDEXES | NAME_INDEXES) & names
        assert "study_date" in names
    finally:
        migrate_to_latest()
    names = index_names()
    assert names >= MODEL_INDEXES
    assert "study_date" not in names
    if connection.vendor == "postgresql":
        assert names >= NAME_INDEXES
    else:
        assert not NAME_INDEXES & names


def plan(queryset) -> str:
    with connection.cursor() as cursor:
        # With a handful of rows a scan of the table is cheapest; forbidding it shows
        # whether an index can answer the condition at all.
        cursor.execute("SET LOCAL enable_seqscan = off")
    return queryset.explain()


@on_postgresql
@pytest.mark.django_db
@pytest.mark.parametrize(
    ("value", "index"),
    [
        ("张三*", "patient_name_ideographic_joined"),
        ("张^三*", "patient_name_ideographic_upper"),
        ("zhang*", "patient_name_alphabetic_upper"),
        ("ZHANG^SAN", "patient_name_alphabetic_upper"),
    ],
)
def test_a_person_name_search_can_use_the_name_indexes_on_postgresql(value, index, township):
    Patient.objects.create(facility=township, patient_id="P1", name_alphabetic="Zhang^San", name_ideographic="张^三")
    condition = qido.person_name_match("", value)
    text = plan(Patient.objects.filter(condition))
    assert index in text
    assert Patient.objects.filter(condition).count() == 1


@on_postgresql
@pytest.mark.django_db
@pytest.mark.parametrize("value", ["P0012345", "P00123*"])
def test_a_patient_id_search_across_townships_can_use_its_index_on_postgresql(value, township):
    Patient.objects.create(facility=township, patient_id="P0012345")
    condition = qido.text_match("patient_id", value)
    assert "patient_id_search" in plan(Patient.objects.filter(condition))
    assert Patient.objects.filter(condition).count() == 1


@pytest.mark.django_db
def test_a_deep_offset_answers_the_same_studies_as_a_shallow_one(monkeypatch, township, ct_modality, technologist):
    for day in range(8):
        make_study(township, ct_modality, study_date=date(2025, 1, 1) + timedelta(days=day))
    client = Client(HTTP_AUTHORIZATION=f"Token {token_for(technologist)}", HTTP_ACCEPT="*/*")

    def page(offset: int) -> list[str]:
        response = client.get("/dicomweb/studies", {"limit": "3", "offset": str(offset)})
        return [item["0020000D"]["Value"][0] for item in response.json()]

    shallow = [page(offset) for offset in (0, 3, 6)]
    monkeypatch.setattr(qido, "DEEP_OFFSET", 1)
    deep = [page(offset) for offset in (0, 3, 6)]
    assert deep == shallow
    assert [len(part) for part in deep] == [3, 3, 2]
    assert len({uid for part in deep for uid in part}) == 8
