"""The reports' one filter builder: the same filters select the same consults whether
they become a Django query or the raw readers' SQL (billing.reports.filters)."""

from __future__ import annotations

from datetime import date

import pytest
from django.db import connection

from billing.reports.filters import Filters
from consults.models import Consult
from facilities.models import ExamKind
from tests.test_dashboards import exams  # noqa: F401 -- the fixture


def raw_ids(filters: Filters, *, signed_only: bool) -> set[int]:
    where, params = filters.consults_sql(signed_only=signed_only)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT c.id FROM consults_consult c WHERE {where}", params)  # noqa: S608
        return {row[0] for row in cursor.fetchall()}


@pytest.mark.django_db
def test_the_query_and_the_sql_select_the_same_consults(exams, township, radiologist) -> None:  # noqa: F811
    for filters in (
        Filters(),
        Filters(date_from=date(2024, 3, 2), date_to=date(2025, 1, 5)),
        Filters(facility=township, kind=ExamKind.CT),
        Filters(radiologist=radiologist),
        Filters(date_to=date(2024, 12, 31), kind=ExamKind.DR),
    ):
        queried = Consult.objects.filter(filters.consult_q()).exclude(status=Consult.Status.CANCELLED)
        assert raw_ids(filters, signed_only=False) == set(queried.values_list("id", flat=True))
        signed = queried.filter(signed_at__isnull=False)
        assert raw_ids(filters, signed_only=True) == set(signed.values_list("id", flat=True))


def test_the_ledger_and_the_rollup_take_what_applies_to_them(township, radiologist) -> None:
    filters = Filters(date_from=date(2024, 1, 1), facility=township, kind=ExamKind.CT, radiologist=radiologist)
    ledger = str(filters.ledger_q())
    assert "exam_kind" in ledger and "radiologist" not in ledger
    rollup = str(filters.rollup_q())
    assert "exam_date" not in rollup and "radiologist" in rollup
    clauses, params = filters.sql("r", dates=False)
    assert clauses == ["r.facility_id = %s", "r.kind = %s", "r.radiologist_id = %s"]
    assert params == [township.pk, ExamKind.CT, radiologist.pk]
