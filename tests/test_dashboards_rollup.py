"""The daily rollup the dashboards read: kept equal to the raw rows (in the ledger's
transaction, from the audit trail, by the rebuild command), and the pages it gives equal
to the figures computed from every consult, quartiles within a histogram bin."""

from __future__ import annotations

import math
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from django.core.management import call_command
from django.db import connection
from django.urls import reverse

from billing import dashboards, histogram, rollup, tasks
from billing.dashboards import Filters, Summary, TurnaroundRow
from billing.models import (
    DailyRollup,
    LedgerEntry,
    MonthlyReaderTurnaround,
    MonthlyRollup,
    MonthlyTownshipRollup,
    MonthlyTownshipTurnaround,
    TownshipTurnaroundSpan,
)
from billing.reports import turnaround_rollup
from billing.services import ensure_shaanxi_2021_schedule, record_saving, reverse_entry
from consults import workflow
from consults.models import Consult
from facilities.models import ExamKind, User
from facilities.services import audit
from tests.factories import make_user
from tests.test_dashboards import make_exam
from tests.test_dashboards_turnaround import many_exams  # noqa: F401 -- a fixture

# ---------------------------------------------------------------------------- histograms


def test_the_bins_are_log_spaced_from_one_second() -> None:
    seconds = np.array([0.0, 0.5, 1.0, 2.0, 4.0, 60.0, -3.0, 1e9])
    bins = histogram.bins_of(seconds)
    assert bins.tolist()[:5] == [0, 0, 1, 65, 129]
    assert histogram.LOWER_SECONDS[bins[5]] <= 60 < histogram.UPPER_SECONDS[bins[5]]
    assert bins[6] == 0  # a clock set back counts as no time
    assert bins[7] == histogram.SIZE - 1  # beyond 48 days: the last bin


def test_histogram_quartiles_are_within_a_bin_of_the_exact_ones() -> None:
    rng = np.random.default_rng(62305)
    for sample in (rng.lognormal(3.5, 0.5, 5000), rng.uniform(0.1, 3, 7), rng.gamma(2, 20, 2)):
        counts = np.bincount(histogram.bins_of(sample * 60), minlength=histogram.SIZE)
        estimated = histogram.quartiles_minutes(counts[None, :])[0]
        exact = np.percentile(sample, [25, 50, 75])
        assert np.all(np.abs(estimated / exact - 1) <= histogram.RELATIVE_ERROR), (estimated, exact)


def test_an_empty_histogram_has_no_quartiles() -> None:
    assert np.isnan(histogram.quartiles_minutes(np.zeros((1, histogram.SIZE)))).all()


def test_histograms_survive_encoding() -> None:
    keys, counts = np.array([3, 2049, 10245]), np.array([1, 70000, 2])
    records = histogram.decode(histogram.encode(keys, counts))
    assert records["key"].tolist() == keys.tolist()
    assert records["count"].tolist() == counts.tolist()


# ---------------------------------------------------------------------------- the pages equal the raw figures


def assert_close(rolled: Summary, raw: Summary) -> None:
    assert rolled.n == raw.n
    if not raw.n:
        assert rolled == raw
        return
    assert raw.mean is not None and rolled.mean is not None
    assert math.isclose(rolled.mean, raw.mean, rel_tol=1e-9)
    if raw.sd is None:
        assert rolled.sd is None
    else:
        assert rolled.sd is not None and math.isclose(rolled.sd, raw.sd, rel_tol=1e-6, abs_tol=1e-6)
    for name in ("q1", "median", "q3"):
        a, b = getattr(rolled, name), getattr(raw, name)
        assert math.isclose(a, b, rel_tol=histogram.RELATIVE_ERROR, abs_tol=1 / 60), (name, a, b)


def assert_same_rows(rolled: list[TurnaroundRow], raw: list[TurnaroundRow]) -> None:
    assert [(r.key, r.label, r.n, r.within_limit, r.drill) for r in rolled] == [
        (r.key, r.label, r.n, r.within_limit, r.drill) for r in raw
    ]
    for a, b in zip(rolled, raw, strict=True):
        assert_close(a.consult, b.consult)
        for key in a.stages:
            assert_close(a.stages[key], b.stages[key])


@pytest.mark.parametrize("period", dashboards.PERIODS)
def test_the_rollups_turnaround_is_the_raw_rows_within_a_bin(many_exams, period) -> None:  # noqa: F811
    assert len(many_exams) == 40
    rolled = dashboards.turnaround(Filters(), period)
    raw = dashboards.turnaround(Filters(), period, source="raw")
    for name in ("by_township", "by_radiologist", "by_kind", "by_period"):
        assert_same_rows(getattr(rolled, name), getattr(raw, name))
    assert_same_rows([rolled.total], [raw.total])
    assert rolled.histogram == raw.histogram


def test_the_rollup_follows_every_filter(many_exams, township) -> None:  # noqa: F811
    for filters in (
        Filters(facility=township),
        Filters(kind=ExamKind.CT),
        Filters(date_from=date(2024, 6, 1), date_to=date(2025, 3, 31)),
        Filters(date_from=date(2024, 6, 15), date_to=date(2025, 3, 10)),
        Filters(date_from=date(2024, 7, 3), date_to=date(2024, 12, 20)),
        Filters(date_to=date(2025, 2, 14)),
        Filters(date_from=date(2025, 1, 1), facility=township, kind=ExamKind.DR),
    ):
        rolled, raw = dashboards.turnaround(filters), dashboards.turnaround(filters, source="raw")
        assert_same_rows([rolled.total, *rolled.by_township], [raw.total, *raw.by_township])


def raw_volume(filters: Filters) -> dict[tuple[str, str, int], int]:
    counts: dict[tuple[str, str, int], int] = {}
    for c in dashboards.volume_consults(filters):
        key = (c.kind, c.facility.short_name, c.exam_date.year)
        counts[key] = counts.get(key, 0) + 1
    return counts


def rolled_volume(filters: Filters) -> dict[tuple[str, str, int], int]:
    return {
        (t.kind, r.facility.short_name, year): n
        for t in dashboards.volume(filters)
        for r in t.rows
        for year, n in zip(t.years, r.counts, strict=True)
        if n
    }


def raw_savings(filters: Filters) -> tuple[int, int, Decimal]:
    entries = list(dashboards.ledger_entries(filters))
    return len(entries), sum(e.body_parts for e in entries), sum((e.saving for e in entries), Decimal("0.00"))


def test_volume_and_savings_from_the_rollup_are_the_raw_rows(many_exams, township, administrator) -> None:  # noqa: F811
    ensure_shaanxi_2021_schedule()
    for consult in many_exams[:10]:
        if consult.facility.is_township:
            record_saving(consult)
    reverse_entry(LedgerEntry.objects.order_by("pk").first(), "部位数录入错误", administrator)
    for filters in (
        Filters(),
        Filters(facility=township),
        Filters(kind=ExamKind.DR, date_from=date(2025, 1, 1)),
        Filters(date_from=date(2024, 3, 17), date_to=date(2025, 5, 2)),
    ):
        assert rolled_volume(filters) == raw_volume(filters)
        total = dashboards.savings(filters).total
        assert (total.entries, total.body_parts, total.saving) == raw_savings(filters)
    assert_township_months_add_up_the_monthly_rows()
    # A radiologist's volume reads the monthly rows by radiologist, not the townships'.
    by_reader = Filters(radiologist=many_exams[0].radiologist)
    assert rolled_volume(by_reader) == raw_volume(by_reader)


@pytest.mark.parametrize(
    ("date_from", "date_to", "months", "days"),
    [
        (None, None, (None, None), ()),
        (date(2024, 1, 1), date(2024, 12, 31), (date(2024, 1, 1), date(2024, 12, 1)), ()),
        (
            date(2024, 1, 15),
            date(2024, 6, 10),
            (date(2024, 2, 1), date(2024, 5, 1)),
            ((date(2024, 1, 15), date(2024, 1, 31)), (date(2024, 6, 1), date(2024, 6, 10))),
        ),
        (date(2024, 1, 15), date(2024, 2, 10), None, ((date(2024, 1, 15), date(2024, 2, 10)),)),
        (None, date(2024, 2, 29), (None, date(2024, 2, 1)), ()),
        (date(2024, 2, 2), None, (date(2024, 3, 1), None), ((date(2024, 2, 2), date(2024, 2, 29)),)),
    ],
)
def test_whole_months_come_from_monthly_rows_and_the_rest_from_daily_ones(date_from, date_to, months, days) -> None:
    split = dashboards.rollup_split(date_from, date_to)
    assert (split.months, split.days) == (months, days)


def test_the_monthly_rows_add_up_the_daily_ones(many_exams) -> None:  # noqa: F811
    figures = [f.name for f in MonthlyRollup._meta.concrete_fields if f.name not in ("id", "month", *rollup.BLOBS)]
    for month in MonthlyRollup.objects.all():
        days = DailyRollup.objects.filter(
            day__year=month.month.year, day__month=month.month.month, facility=month.facility, kind=month.kind
        ).filter(radiologist=month.radiologist)
        for name in figures:
            if name in ("facility", "kind", "radiologist"):
                continue
            assert getattr(month, name) == pytest.approx(sum(getattr(d, name) for d in days)), name
        for name in rollup.BLOBS:
            assert records(getattr(month, name)) == merged_records(getattr(d, name) for d in days), name
    assert_township_months_add_up_the_monthly_rows()


def records(blob: Any) -> list[tuple[int, int]]:
    return [tuple(r) for r in histogram.decode(bytes(blob)).tolist()]


def merged_records(blobs: Any) -> list[tuple[int, int]]:
    """Records of many rows merged key by key, in Python."""
    merged: dict[int, int] = {}
    for blob in blobs:
        for key, count in records(blob):
            merged[key] = merged.get(key, 0) + count
    return sorted(merged.items())


def assert_township_months_add_up_the_monthly_rows() -> None:
    """The per-township months hold the monthly rows' volume and ledger figures, summed
    over the radiologists."""
    months = list(MonthlyRollup.objects.all())
    townships = list(MonthlyTownshipRollup.objects.all())
    assert {(t.month, t.facility_id, t.kind) for t in townships} == {(m.month, m.facility_id, m.kind) for m in months}
    for t in townships:
        own = [m for m in months if (m.month, m.facility_id, m.kind) == (t.month, t.facility_id, t.kind)]
        for name in rollup.TOWNSHIP_SUMMED:
            assert getattr(t, name) == sum(getattr(m, name) for m in own), name


# ---------------------------------------------------------------------------- keeping it up to date


@pytest.fixture
def signed_exam(township, ct_modality, radiologist) -> Consult:
    ensure_shaanxi_2021_schedule()
    return make_exam(township, ExamKind.CT, date(2025, 3, 3), 42, radiologist, parts=2)


def test_a_ledger_entry_reaches_the_rollup_in_its_own_transaction(signed_exam) -> None:
    assert not DailyRollup.objects.exists()
    record_saving(signed_exam)
    row = DailyRollup.objects.get()
    assert (row.day, row.facility_id, row.kind, row.radiologist_id) == (
        signed_exam.exam_date,
        signed_exam.facility_id,
        ExamKind.CT,
        signed_exam.radiologist_id,
    )
    assert (row.exams, row.signed, row.ledger_entries, row.ledger_parts, row.saving) == (1, 1, 1, 2, Decimal("60.00"))
    assert math.isclose(row.consult_sum, 42.0)
    assert dashboards.turnaround(Filters()).total.consult.median == pytest.approx(42.0)
    month = MonthlyRollup.objects.get()
    assert (month.month, month.exams, month.saving) == (date(2025, 3, 1), 1, Decimal("60.00"))


def test_a_reversal_reaches_the_rollup_at_once(signed_exam, administrator) -> None:
    entry = record_saving(signed_exam)
    reverse_entry(entry, "重复登记", administrator)
    row = DailyRollup.objects.get()
    assert (row.ledger_entries, row.ledger_parts, row.saving) == (2, 0, Decimal("0.00"))
    assert dashboards.savings(Filters()).total.saving == Decimal("0.00")


def test_the_periodic_task_follows_the_consults_change_feed(signed_exam, township, radiologist) -> None:
    tasks.record_savings_for_signed_consults()  # bills the signed exam; the rollup follows
    unsigned = make_exam(township, ExamKind.CT, date(2025, 3, 3), 0, radiologist, signed=False)
    assert DailyRollup.objects.get().exams == 1
    tasks.record_savings_for_signed_consults()
    assert DailyRollup.objects.get().exams == 2
    # Delivered later, by the workflow: the last stage appears once its change is followed.
    Consult.objects.filter(pk=signed_exam.pk).update(delivered_at=None, status=Consult.Status.SIGNED)
    signed_exam.refresh_from_db()
    rollup.rebuild()
    assert DailyRollup.objects.get().deliver_n == 0
    assert workflow.mark_delivered(signed_exam, channel="dicom", now=signed_exam.signed_at + timedelta(minutes=2))
    assert DailyRollup.objects.get().deliver_n == 0  # not yet followed
    assert rollup.follow_consult_changes() == 1
    assert DailyRollup.objects.get().deliver_n == 1
    assert rollup.follow_consult_changes() == 0  # nothing new
    # The audit trail is only the audit trail: an event written there is not a change.
    audit("consults.report.delivered", obj=unsigned)
    assert rollup.follow_consult_changes() == 0


def test_the_command_rebuilds_a_range_of_days(signed_exam, township, radiologist) -> None:
    record_saving(signed_exam)
    other_day = make_exam(township, ExamKind.CT, date(2025, 4, 1), 30, radiologist)
    call_command("rebuild_rollup", "--from", "2025-04-01", "--to", "2025-04-01", stdout=open("/dev/null", "w"))  # noqa: SIM115
    assert sorted(DailyRollup.objects.values_list("day", "exams")) == [(date(2025, 3, 3), 1), (date(2025, 4, 1), 1)]
    Consult.objects.filter(pk=other_day.pk).update(exam_date=date(2025, 4, 2))
    call_command("rebuild_rollup", stdout=open("/dev/null", "w"))  # noqa: SIM115
    assert sorted(DailyRollup.objects.values_list("day", "exams")) == [(date(2025, 3, 3), 1), (date(2025, 4, 2), 1)]


def test_a_refresh_of_a_day_leaves_the_other_days_and_townships_alone(signed_exam, other_township, radiologist) -> None:
    record_saving(signed_exam)
    elsewhere = make_exam(other_township, ExamKind.CT, signed_exam.exam_date, 30, radiologist)
    rollup.refresh_day(signed_exam.exam_date, other_township)
    assert DailyRollup.objects.count() == 2
    rollup.refresh_day(signed_exam.exam_date, signed_exam.facility)
    assert DailyRollup.objects.count() == 2
    assert elsewhere.pk


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the COPY path is PostgreSQL's")
def test_the_rollup_written_by_copy_reads_back_as_computed(many_exams) -> None:  # noqa: F811
    row = DailyRollup.objects.order_by("day", "pk").first()
    assert row is not None and bytes(row.histograms)
    assert histogram.decode(bytes(row.histograms))["count"].sum() == row.consult_n + row.assign_n + row.open_n + (
        row.sign_n + row.deliver_n + row.signed
    )


def test_the_exam_list_counts_from_the_rollup_what_it_lists(many_exams, administrator_client, township) -> None:  # noqa: F811
    exams_url = reverse("billing:dashboards:exams")
    for params in (
        {},
        {"basis": "signed"},
        {"basis": "signed", "township": str(township.uuid), "modality": "CT"},
        {"year": "2024"},
        {"year": "2025", "quarter": "2", "date_from": "2025-05-10"},
        {"date_from": "2024-02-15", "date_to": "2025-01-20", "basis": "all"},
        {"year": "2024", "date_from": "2025-01-01"},
    ):
        response = administrator_client.get(exams_url, params)
        assert response.status_code == 200
        page = response.context["page"]
        assert response.context["count"] == page.paginator.object_list.count(), params


# ---------------------------------------------------------------------------- per-township and per-radiologist months


@pytest.fixture
def two_readers(many_exams, township, county) -> list[Consult]:  # noqa: F811
    """many_exams with a third of them read by a second radiologist."""
    second = make_user(User.Role.RADIOLOGIST, county, username="dr_zhao", display_name="赵医生")
    for consult in many_exams[::3]:
        consult.radiologist = second
        consult.save()
    rollup.rebuild()
    return many_exams


def assert_grains_add_up_the_monthly_rows() -> None:
    for model, key in ((MonthlyTownshipTurnaround, "facility"), (MonthlyReaderTurnaround, "radiologist")):
        grains = list(model.objects.all())
        expected = {(m.month, getattr(m, f"{key}_id"), m.kind) for m in MonthlyRollup.objects.filter(signed__gt=0)}
        assert {(g.month, getattr(g, f"{key}_id"), g.kind) for g in grains} == expected
        for grain in grains:
            months = MonthlyRollup.objects.filter(month=grain.month, kind=grain.kind, **{key: getattr(grain, key)})
            summed, blobs = rollup.TURNAROUND_SUMMED, ("histograms",)
            if model is MonthlyReaderTurnaround:  # also when the reports were signed (the workload's)
                summed, blobs = rollup.READER_SUMMED, rollup.READER_BLOBS
            for name in summed:
                assert getattr(grain, name) == pytest.approx(sum(getattr(m, name) for m in months)), name
            for name in blobs:
                assert records(getattr(grain, name)) == merged_records(getattr(m, name) for m in months), name
    assert_spans_add_up_the_township_months()


def assert_spans_add_up_the_township_months() -> None:
    """Each township's yearly and all-time rows are its monthly rows added up."""
    spans = list(TownshipTurnaroundSpan.objects.all())
    months = list(MonthlyTownshipTurnaround.objects.all())
    expected = {(m.month.year, m.facility_id, m.kind) for m in months}
    expected |= {(None, m.facility_id, m.kind) for m in months}
    assert {(s.year, s.facility_id, s.kind) for s in spans} == expected
    for span in spans:
        own = [m for m in months if (m.facility_id, m.kind) == (span.facility_id, span.kind)]
        own = [m for m in own if span.year is None or m.month.year == span.year]
        for name in rollup.TURNAROUND_SUMMED:
            assert getattr(span, name) == pytest.approx(sum(getattr(m, name) for m in own)), name
        merged: dict[int, int] = {}
        for m in own:
            for record in histogram.decode(bytes(m.histograms)).tolist():
                merged[record[0]] = merged.get(record[0], 0) + record[1]
        assert histogram.decode(bytes(span.histograms)).tolist() == sorted(merged.items())


def test_the_per_township_and_per_radiologist_months_add_up_the_monthly_rows(two_readers) -> None:
    assert MonthlyReaderTurnaround.objects.values("radiologist").distinct().count() == 2
    assert_grains_add_up_the_monthly_rows()


@pytest.mark.parametrize("period", dashboards.PERIODS)
def test_the_turnaround_from_those_months_is_the_turnaround_from_the_monthly_rows(two_readers, period) -> None:
    for filters in (
        Filters(),
        Filters(kind=ExamKind.CT),
        Filters(date_from=date(2024, 6, 15), date_to=date(2025, 3, 10)),
        Filters(date_from=date(2024, 7, 1), date_to=date(2025, 6, 30)),
        # Whole years, read from the yearly rows, with the months and days around them.
        Filters(date_from=date(2024, 1, 1), date_to=date(2024, 12, 31)),
        Filters(date_from=date(2023, 11, 20), date_to=date(2025, 2, 3), kind=ExamKind.DR),
        Filters(date_from=date(2024, 1, 1)),
        Filters(date_to=date(2024, 12, 31)),
    ):
        assert turnaround_rollup.grain_parts(filters) is not None
        fast = dashboards.turnaround(filters, period)
        plain = turnaround_rollup.rollup_groups(filters, period, grains=False)
        assert turnaround_rollup.rollup_groups(filters, period)[1] == plain[1]  # the distribution plot
        groups = turnaround_rollup.rollup_groups(filters, period)[0]
        assert groups.keys() == plain[0].keys()
        for key, group in groups.items():
            other = plain[0][key]
            assert group.within_limit == other.within_limit
            for a, b in zip(
                (group.consult, *group.stages.values()), (other.consult, *other.stages.values()), strict=True
            ):
                assert (a.n, a.q1, a.median, a.q3) == (b.n, b.q1, b.median, b.q3), key
                assert a.mean == pytest.approx(b.mean) and a.sd == pytest.approx(b.sd), key
        raw = dashboards.turnaround(filters, period, source="raw")
        for name in ("by_township", "by_radiologist", "by_kind", "by_period"):
            assert_same_rows(getattr(fast, name), getattr(raw, name))


def test_a_township_or_radiologist_filter_reads_the_monthly_rows(township, radiologist) -> None:
    assert turnaround_rollup.grain_parts(Filters(facility=township)) is None
    assert turnaround_rollup.grain_parts(Filters(radiologist=radiologist)) is None
    assert turnaround_rollup.grain_parts(Filters(date_from=date(2024, 6, 2), date_to=date(2024, 6, 20))) is None


def test_a_consult_handed_to_another_radiologist_moves_between_their_months(two_readers, radiologist) -> None:
    consult = next(c for c in two_readers if c.radiologist_id != radiologist.pk)
    second = consult.radiologist
    month = consult.exam_date.replace(day=1)

    def signed(reader: User) -> int:
        return sum(
            MonthlyReaderTurnaround.objects.filter(month=month, radiologist=reader).values_list("signed", flat=True)
        )

    before = (signed(radiologist), signed(second))
    consult.radiologist = radiologist
    consult.save()
    rollup.refresh_day(consult.exam_date, consult.facility)
    assert (signed(radiologist), signed(second)) == (before[0] + 1, before[1] - 1)
    assert_grains_add_up_the_monthly_rows()
    rolled, raw = dashboards.turnaround(Filters()), dashboards.turnaround(Filters(), source="raw")
    assert_same_rows(rolled.by_radiologist, raw.by_radiologist)
