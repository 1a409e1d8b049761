"""The administrators' reports (billing/reports/growth.py, workload.py, travel.py and their
pages): each figure against the raw rows, counted here in Python from the consults and the
ledger, on a seeded history with nights, weekends, every priority, a cancelled exam, an
unsigned overdue one, a reversal and patients who come back."""

from __future__ import annotations

import csv
import io
import math
import random
from collections import Counter, defaultdict
from datetime import date, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.urls import reverse
from django.utils import timezone
from openpyxl import load_workbook

from billing import dashboards, hanyin, rollup
from billing.dashboards import Filters
from billing.models import BilledPatients, LedgerEntry
from billing.reports.growth import growth_percent
from billing.reports.travel import travel_raw
from billing.reports.workload import within_limit_raw, workload_raw
from billing.services import ensure_shaanxi_2021_schedule, record_saving, reverse_entry
from cloudpacs.env import ConfigError, env_hours
from consults.models import Consult, Priority
from facilities.models import ExamKind, Facility, Modality, User
from tests.conftest import login
from tests.factories import (
    make_administrator,
    make_county,
    make_ct_modality,
    make_modality,
    make_other_township,
    make_radiologist,
    make_study,
    make_technologist,
    make_township,
    make_user,
)
from tests.test_dashboards import make_exam, page_tables

TZ = ZoneInfo("Asia/Shanghai")
GROWTH = reverse("billing:dashboards:growth")
WORKLOAD = reverse("billing:dashboards:workload")
TIMELINESS = reverse("billing:dashboards:timeliness")
SAVINGS = reverse("billing:dashboards:savings")
TRAVEL = reverse("billing:dashboards:travel")


@pytest.fixture(scope="module")
def world(module_transaction) -> dict[str, Any]:
    """The personas and the history, built once for the module (conftest's
    `module_transaction`): the reports only read them, and what a test writes is undone
    after it. The persona fixtures below are these rows, read again for each test, so that
    a test changing one (a township's travel figures) leaves the next its own copy."""
    with module_transaction.building():
        county, township, other_township = make_county(), make_township(), make_other_township()
        make_ct_modality(township)
        make_modality(township, ExamKind.DR, "XUANWO_DR")
        people = {
            "radiologist": make_radiologist(county),
            "administrator": make_administrator(county),
            "technologist": make_technologist(township),
        }
        history = build_history(township, other_township, people["radiologist"], people["administrator"])
        return {"county": county, "township": township, "other_township": other_township, **people, **history}


@pytest.fixture
def history(world: dict[str, Any], db) -> dict[str, Any]:
    return world


def _again(row: Any) -> Any:
    return type(row).objects.get(pk=row.pk)


@pytest.fixture
def county(world: dict[str, Any], db) -> Facility:
    return _again(world["county"])


@pytest.fixture
def township(world: dict[str, Any], db) -> Facility:
    return _again(world["township"])


@pytest.fixture
def other_township(world: dict[str, Any], db) -> Facility:
    return _again(world["other_township"])


@pytest.fixture
def radiologist(world: dict[str, Any], db) -> User:
    return _again(world["radiologist"])


@pytest.fixture
def administrator(world: dict[str, Any], db) -> User:
    return _again(world["administrator"])


@pytest.fixture
def technologist(world: dict[str, Any], db) -> User:
    return _again(world["technologist"])


def build_history(
    township: Facility, other_township: Facility, radiologist: User, administrator: User
) -> dict[str, Any]:
    """About 60 exams from 2023-11 to 2025-03, two to five a month, in two townships: CT
    and DR, three priorities, two radiologists, reports signed by day, at night and at
    weekends, some late; no exam in 2024-08 (a base of 0), none at Pingliang in 2024-02;
    one cancelled exam, one unsigned and overdue, one reversal, returning patients."""
    ensure_shaanxi_2021_schedule()
    Modality.objects.create(facility=other_township, kind=ExamKind.DR, ae_title="PINGLIANG_DR")
    second = make_user(User.Role.RADIOLOGIST, None, username="dr_wang", display_name="王医生")
    rng = random.Random(23)
    patients: dict[int, list[Any]] = {township.pk: [], other_township.pk: []}
    consults = []
    first = date(2023, 11, 1)
    for n in range(17):
        month = date(first.year + (first.month - 1 + n) // 12, (first.month - 1 + n) % 12 + 1, 1)
        if (month.year, month.month) == (2024, 8):
            continue
        for _n in range(rng.randint(2, 5)):
            day = month + timedelta(days=rng.randint(0, 27))
            facility = township if rng.random() < 0.7 or (month.year, month.month) == (2024, 2) else other_township
            kind = ExamKind.CT if facility == township and rng.random() < 0.5 else ExamKind.DR
            priority = rng.choice([Priority.ROUTINE] * 5 + [Priority.URGENT, Priority.EMERGENCY])
            hour = rng.choice([3, 8, 9, 11, 14, 16, 17, 19, 22])
            minutes = rng.choice([15, 25, 40, 70, 100, 150, 260])
            reader = radiologist if rng.random() < 0.6 else second
            consult = make_exam(
                facility, kind, day, minutes, reader, priority=priority, parts=rng.choice([1, 1, 2]), hour=hour
            )
            # Some patients come back: the same patient's second study.
            known = patients[facility.pk]
            patient = rng.choice(known) if known and rng.random() < 0.3 else None
            study = make_study(facility, consult.modality, patient=patient)
            known.append(study.patient)
            Consult.objects.filter(pk=consult.pk).update(study=study)
            consults.append(consult)
    for consult in consults:
        consult.refresh_from_db()
        record_saving(consult)
    reverse_entry(consults[5].ledger_entries.get(), "部位数录入错误", administrator)
    cancelled = make_exam(township, ExamKind.CT, date(2024, 5, 6), 30, radiologist)
    Consult.objects.filter(pk=cancelled.pk).update(status=Consult.Status.CANCELLED)
    overdue = make_exam(township, ExamKind.DR, date(2025, 3, 28), 0, None, signed=False, priority=Priority.URGENT)
    rollup.follow_consult_changes()
    rollup.refresh_day(cancelled.exam_date, township)
    return {"consults": consults, "cancelled": cancelled, "overdue": overdue, "second": second}


# ---------------------------------------------------------------------------- the raw rows


def month_of(day: date) -> str:
    return f"{day:%Y-%m}"


def raw_exams(facility: Facility | None = None, kind: str | None = None, first=None, last=None) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for c in Consult.objects.exclude(status=Consult.Status.CANCELLED):
        if (facility and c.facility_id != facility.pk) or (kind and c.kind != kind):
            continue
        if (first and c.exam_date < first) or (last and c.exam_date > last):
            continue
        counts[month_of(c.exam_date)] += 1
    return dict(counts)


def raw_savings() -> dict[str, Decimal]:
    sums: dict[str, Decimal] = defaultdict(lambda: Decimal("0.00"))
    for e in LedgerEntry.objects.all():
        sums[month_of(e.exam_date)] += e.saving
    return dict(sums)


def by_year(months: dict[str, Any]) -> dict[str, Any]:
    years: dict[str, Any] = defaultdict(int)
    for key, value in months.items():
        years[key[:4]] += value
    return dict(years)


def previous_month(key: str) -> str:
    year, month = int(key[:4]), int(key[5:])
    return f"{year - 1}-12" if month == 1 else f"{year}-{month - 1:02d}"


# ---------------------------------------------------------------------------- growth


def test_growth_is_blank_not_infinite_when_the_base_is_zero_or_missing() -> None:
    assert growth_percent(10, 0) is None
    assert growth_percent(10, None) is None
    assert growth_percent(15, 10) == Decimal("50.0")
    assert growth_percent(Decimal("90.00"), Decimal("120.00")) == Decimal("-25.0")
    assert growth_percent(2, 3) == Decimal("-33.3")


def test_exams_year_over_year_and_month_over_month_match_the_raw_rows(history) -> None:
    data = dashboards.growth(Filters())
    months = raw_exams()
    assert [r.key for r in data.exams_by_month] == sorted(months)
    for row in data.exams_by_month:
        year_before = f"{int(row.key[:4]) - 1}{row.key[4:]}"
        assert row.value == months[row.key]
        assert (row.year_before or 0) == months.get(year_before, 0)
        assert (row.period_before or 0) == months.get(previous_month(row.key), 0)
        assert row.year_over_year == growth_percent(months[row.key], months.get(year_before))
        assert row.period_over_period == growth_percent(months[row.key], months.get(previous_month(row.key)))
    # 2024-09 follows a month with no exam: its month-over-month is blank, not infinite.
    september = next(r for r in data.exams_by_month if r.key == "2024-09")
    assert september.period_over_period is None
    years = by_year(months)
    assert {r.key: r.value for r in data.exams_by_year} == years
    y2024 = next(r for r in data.exams_by_year if r.key == "2024")
    assert y2024.year_before == years["2023"]
    assert y2024.year_over_year == growth_percent(years["2024"], years["2023"])
    # The first year has nothing before it; the last stops in March: both partial.
    first = data.exams_by_year[0]
    assert first.key == "2023" and first.year_over_year is None
    assert data.exams_by_year[-1].partial is not None


def test_savings_growth_matches_the_ledger_reversals_included(history) -> None:
    data = dashboards.growth(Filters())
    months = raw_savings()
    assert {r.key: r.value for r in data.savings_by_month} == {k: v for k, v in months.items()}
    assert {r.key: r.value for r in data.savings_by_year} == by_year(months)
    assert sum(r.value for r in data.savings_by_year) == dashboards.savings(Filters()).total.saving
    for row in data.savings_by_month:
        assert row.period_over_period == growth_percent(months[row.key], months.get(previous_month(row.key)))


def test_growth_bases_reach_before_the_date_filter(history, township) -> None:
    """January compares with December and with last January even when the filter starts
    in January; the filter's township and kind hold for the bases too."""
    filters = Filters(date_from=date(2025, 1, 1), date_to=date(2025, 3, 15), facility=township, kind=ExamKind.CT)
    data = dashboards.growth(filters)
    shown = raw_exams(township, ExamKind.CT, date(2025, 1, 1), date(2025, 3, 15))
    every = raw_exams(township, ExamKind.CT)
    assert {r.key: r.value for r in data.exams_by_month} == shown
    january = data.exams_by_month[0]
    assert january.key == "2025-01"
    assert (january.period_before or 0) == every.get("2024-12", 0)
    assert (january.year_before or 0) == every.get("2024-01", 0)
    assert [(r.key, r.partial) for r in data.exams_by_year] == [("2025", (date(2025, 1, 1), date(2025, 3, 15)))]


# ---------------------------------------------------------------------------- workload


def raw_work(night: tuple[int, int] = (18 * 60, 8 * 60)) -> dict[tuple[int, str], dict[str, Any]]:
    start, end = night
    cells: dict[tuple[int, str], dict[str, Any]] = defaultdict(lambda: defaultdict(float))
    for c in Consult.objects.exclude(status=Consult.Status.CANCELLED).filter(
        signed_at__isnull=False, radiologist__isnull=False
    ):
        local = c.signed_at.astimezone(TZ)
        minute = local.hour * 60 + local.minute
        at_night = (start <= minute < end) if start < end else (minute >= start or minute < end)
        cell = cells[(c.radiologist_id, month_of(c.exam_date))]
        cell["signed"] += 1
        if local.isoweekday() >= 6:
            cell["weekend"] += 1
        elif at_night:
            cell["night"] += 1
        else:
            cell["day"] += 1
        cell["within"] += 1 if c.due_at is not None and c.signed_at <= c.due_at else 0
        cell["minutes"] += (c.signed_at - c.arrived_at).total_seconds() / 60
    return cells


def assert_work_matches(data: dashboards.Workload, cells: dict[tuple[int, str], dict[str, Any]]) -> None:
    seen = 0
    for line in data.radiologists:
        for month, work in line.months.items():
            raw = cells[(line.radiologist.pk, month)]
            assert work.signed == raw["signed"]
            assert work.weekday_day == raw["day"]
            assert work.weekday_night == raw["night"]
            assert work.weekend == raw["weekend"]
            assert work.within_limit == raw["within"]
            assert math.isclose(work.mean_minutes, raw["minutes"] / raw["signed"], abs_tol=1e-6)
            seen += 1
    assert seen == len(cells)
    assert data.total.signed == sum(c["signed"] for c in cells.values())


def test_each_radiologists_month_splits_days_nights_and_weekends_as_the_raw_rows(history) -> None:
    data = dashboards.workload(Filters())
    cells = raw_work()
    assert_work_matches(data, cells)
    # The history has work of every sort, so the split is tested, not vacuous.
    assert data.total.weekday_night and data.total.weekend and data.total.weekday_day
    assert data.night == "18:00–08:00"
    # A cancelled exam and an unsigned one are no one's work.
    assert data.total.signed == len(history["consults"])


def test_the_night_follows_the_setting(history, settings) -> None:
    settings.REPORT_NIGHT_HOURS = (22 * 60, 6 * 60)
    assert_work_matches(dashboards.workload(Filters()), raw_work((22 * 60, 6 * 60)))
    settings.REPORT_NIGHT_HOURS = (12 * 60, 14 * 60)  # a span inside the day works too
    data = dashboards.workload(Filters())
    assert_work_matches(data, raw_work((12 * 60, 14 * 60)))
    assert data.night == "12:00–14:00"


def test_the_workload_of_one_radiologist_is_theirs_only(history) -> None:
    second = history["second"]
    data = dashboards.workload(Filters(radiologist=second))
    assert [line.radiologist for line in data.radiologists] == [second]
    cells = {k: v for k, v in raw_work().items() if k[0] == second.pk}
    assert_work_matches(data, cells)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("18:00-08:00", (1080, 480)), ("22:30 - 06:00", (1350, 360)), ("09:00-17:00", (540, 1020))],
)
def test_night_hours_are_read_from_the_environment(monkeypatch, value, expected) -> None:
    monkeypatch.setenv("REPORT_NIGHT_HOURS", value)
    assert env_hours("REPORT_NIGHT_HOURS", "18:00-08:00") == expected


@pytest.mark.parametrize("value", ["18-8", "25:00-08:00", "18:00", "08:00-08:00", "18:60-08:00", "night"])
def test_bad_night_hours_stop_the_start_naming_the_variable(monkeypatch, value) -> None:
    monkeypatch.setenv("REPORT_NIGHT_HOURS", value)
    with pytest.raises(ConfigError, match="REPORT_NIGHT_HOURS"):
        env_hours("REPORT_NIGHT_HOURS", "18:00-08:00")


# ---------------------------------------------------------------------------- within the limit


def test_the_share_within_the_limit_by_priority_and_kind_matches_the_raw_rows(history) -> None:
    now = timezone.now()
    data = dashboards.within_limit(Filters(), now=now)
    raw: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for c in Consult.objects.exclude(status=Consult.Status.CANCELLED):
        cell = raw[(c.priority, c.kind)]
        cell["consults"] += 1
        if c.signed_at is not None:
            cell["signed"] += 1
            cell["within"] += int(c.due_at is not None and c.signed_at <= c.due_at)
        elif c.due_at is not None and c.due_at < now:
            cell["overdue"] += 1
    assert set(data.cells) == set(raw)
    for key, cell in data.cells.items():
        assert (cell.consults, cell.signed, cell.within_limit, cell.open_overdue) == (
            raw[key]["consults"],
            raw[key]["signed"],
            raw[key]["within"],
            raw[key]["overdue"],
        )
    assert data.priorities == ["emergency", "urgent", "routine"]
    assert data.total.open_overdue == 1  # the unsigned urgent DR
    # The same rule as the turnaround page: its share within the limit is this one.
    turnaround = dashboards.turnaround(Filters(), source="raw")
    assert data.total.within_limit == turnaround.total.within_limit
    assert data.total.signed == turnaround.total.n
    assert data.by_kind["CT"].within_limit == next(r for r in turnaround.by_kind if r.key == "CT").within_limit


# ---------------------------------------------------------------------------- travel


def test_saving_per_exam_and_per_patient_match_the_ledger(history, township, other_township) -> None:
    township.county_distance_km, township.round_trip_cost, township.round_trip_minutes = Decimal("51"), 51, 204
    township.travel_source = "测试"
    township.save()
    data = dashboards.travel(Filters())
    billed = [e for e in LedgerEntry.objects.filter(reverses__isnull=True) if not hasattr(e, "reversed_by")]
    assert data.exams == len(billed) == len(history["consults"]) - 1
    assert data.saving == sum(e.saving for e in billed) == dashboards.savings(Filters()).total.saving
    for row in data.townships:
        mine = [e for e in billed if e.facility_id == row.facility.pk]
        patients = {e.consult.study.patient_id for e in mine}
        assert row.exams == len(mine)
        assert row.patients == len(patients) < len(mine)  # patients came back
        assert row.saving == sum(e.saving for e in mine)
        assert row.saving_per_exam == (row.saving / len(mine)).quantize(Decimal("0.01"))
        assert row.saving_per_patient == (row.saving / len(patients)).quantize(Decimal("0.01"))
    xuanwo = next(r for r in data.townships if r.facility == township)
    assert xuanwo.travel_cost == 51 * xuanwo.exams
    assert xuanwo.travel_km == 102 * xuanwo.exams
    assert xuanwo.travel_hours == (Decimal(204 * xuanwo.exams) / 60).quantize(Decimal("0.1"))
    # Pingliang has no distance yet: it is named, and left out of the travel totals.
    assert data.unknown == [other_township]
    assert data.travel_cost == xuanwo.travel_cost


def test_every_hanyin_township_has_travel_defaults_with_a_source_or_estimated() -> None:
    for t in hanyin.TOWNSHIPS:
        fields = hanyin.travel_defaults(t.code)
        assert fields["county_distance_km"] > 0
        assert fields["travel_source"].startswith(("估算", "三秦游", "乡镇介绍"))
        assert "估算" in fields["travel_source"]  # the fare and time are estimates everywhere
    xuanwo = hanyin.travel_defaults("XUANWO")
    assert xuanwo["county_distance_km"] == 51 and "51公里" in xuanwo["travel_source"]
    assert xuanwo["round_trip_cost"] == 51 and xuanwo["round_trip_minutes"] == 204


# ---------------------------------------------------------------------------- the rollup against the raw rows


def filter_cases(history: dict[str, Any], township: Facility) -> list[Filters]:
    """All time; whole months; days at either end of a range; a year; a township, a kind,
    a radiologist: each way the rollup is read (per-radiologist or per-township months,
    monthly rows, daily rows, all-time rows)."""
    return [
        Filters(),
        Filters(date_from=date(2024, 1, 1), date_to=date(2024, 12, 31)),
        Filters(date_from=date(2023, 12, 1), date_to=date(2024, 6, 30)),
        Filters(date_from=date(2024, 1, 15), date_to=date(2024, 11, 10)),
        Filters(date_from=date(2024, 3, 3), date_to=date(2024, 3, 20)),
        Filters(date_from=date(2024, 10, 9)),
        Filters(date_to=date(2024, 4, 17)),
        Filters(facility=township),
        Filters(facility=township, date_from=date(2024, 2, 10), date_to=date(2025, 1, 31)),
        Filters(kind=ExamKind.DR),
        Filters(kind=ExamKind.CT, date_from=date(2024, 5, 20)),
        Filters(radiologist=history["second"]),
        Filters(radiologist=history["second"], date_from=date(2024, 1, 20), date_to=date(2024, 9, 30)),
    ]


def work_table(data: dashboards.Workload) -> dict[tuple[int, str], tuple[Any, ...]]:
    """Each radiologist's months: the counts, exactly, and the minutes to a millionth of a
    minute (the rollup adds floats where the raw query adds intervals)."""
    return {
        (line.radiologist.pk, month): (
            w.signed,
            w.weekday_day,
            w.weekday_night,
            w.weekend,
            w.within_limit,
            w.minutes_total,
        )
        for line in data.radiologists
        for month, w in line.months.items()
    }


def assert_same_work(rolled: dashboards.Workload, raw: dashboards.Workload) -> None:
    a, b = work_table(rolled), work_table(raw)
    assert a.keys() == b.keys()
    for key in a:
        assert a[key][:-1] == b[key][:-1], key
        assert math.isclose(a[key][-1], b[key][-1], rel_tol=1e-9, abs_tol=1e-6), key
    assert rolled.months == raw.months
    assert [line.radiologist for line in rolled.radiologists] == [line.radiologist for line in raw.radiologists]


def test_the_workload_from_the_rollup_is_the_raw_rows_under_every_filter(history, township, settings) -> None:
    for night in ((18 * 60, 8 * 60), (12 * 60 + 30, 14 * 60 + 45)):
        settings.REPORT_NIGHT_HOURS = night
        for filters in filter_cases(history, township):
            assert_same_work(dashboards.workload(filters), workload_raw(filters))
    assert work_table(dashboards.workload(Filters()))  # not vacuous


def test_the_share_within_the_limit_from_the_rollup_is_the_raw_rows_under_every_filter(history, township) -> None:
    now = timezone.now()
    for filters in filter_cases(history, township):
        rolled, raw = dashboards.within_limit(filters, now=now), within_limit_raw(filters, now=now)
        assert rolled == raw, filters
    everything = dashboards.within_limit(Filters(), now=now)
    assert everything.priorities == ["emergency", "urgent", "routine"]
    assert everything.total.open_overdue == 1


def travel_table(data: dashboards.Travel) -> dict[int, tuple[int, int, Decimal]]:
    return {t.facility.pk: (t.exams, t.patients, t.saving) for t in data.townships}


def test_the_patients_and_exams_billed_from_the_rollup_are_the_ledgers_under_every_filter(history, township) -> None:
    # An exam with no archived study is a patient of its own.
    alone = make_exam(township, ExamKind.DR, date(2024, 6, 11), 45, history["second"])
    record_saving(alone)
    for filters in filter_cases(history, township):
        rolled, raw = dashboards.travel(filters), travel_raw(filters)
        assert travel_table(rolled) == travel_table(raw), filters
        assert (rolled.exams, rolled.patients, rolled.saving) == (raw.exams, raw.patients, raw.saving)
    # Patients who came back in another month are counted once over both: the months'
    # patients do not add up to all time's, so the union is tested, not a sum.
    months = BilledPatients.objects.filter(month__isnull=False, facility=township)
    all_time = BilledPatients.objects.get(month__isnull=True, facility=township, kind="")
    assert sum(m.patients for m in months) > all_time.patients == travel_table(travel_raw(Filters()))[township.pk][1]


def test_the_patients_follow_a_reversal_and_a_returning_patient(history, township, administrator) -> None:
    consults = history["consults"]
    # A patient billed before (consults[5]'s entry is the history's reversal).
    patient = next(c.study.patient for c in consults if c.facility_id == township.pk and c != consults[5])
    returning = make_exam(township, ExamKind.CT, date(2025, 3, 3), 30, history["second"])
    Consult.objects.filter(pk=returning.pk).update(study=make_study(township, returning.modality, patient=patient))
    returning.refresh_from_db()
    before = travel_table(dashboards.travel(Filters()))[township.pk]
    record_saving(returning)
    after = travel_table(dashboards.travel(Filters()))[township.pk]
    assert after[0] == before[0] + 1 and after[1] == before[1]  # one more exam, no new patient
    reverse_entry(returning.ledger_entries.get(), "重复计费", administrator)
    assert travel_table(dashboards.travel(Filters()))[township.pk] == before
    for filters in filter_cases(history, township):
        assert travel_table(dashboards.travel(filters)) == travel_table(travel_raw(filters)), filters


# ---------------------------------------------------------------------------- the pages


def test_the_growth_page_shows_the_tables_with_blank_growth_on_a_zero_base(history, administrator) -> None:
    response = login(administrator).get(GROWTH)
    assert response.status_code == 200
    tables = page_tables(response)
    months = {row[0]: row[1:] for row in tables["growth-exams-month"][1:]}
    raw = raw_exams()
    assert months["2024-09"][0] == f"{raw['2024-09']:,}"
    assert months["2024-09"][4] == ""  # month over month from an empty August
    years = {row[0]: row[1:] for row in tables["growth-exams-year"][1:]}
    assert years["2023"][2] == ""
    assert "同比增长" in response.content.decode() and "环比增长" in response.content.decode()
    assert "growth-savings-year" in tables


def test_the_workload_page_says_what_night_means(history, administrator, settings) -> None:
    settings.REPORT_NIGHT_HOURS = (22 * 60, 6 * 60)
    response = login(administrator).get(WORKLOAD)
    assert response.status_code == 200
    page = response.content.decode()
    assert "22:00–06:00" in page and "北京时间" in page
    people = {row[0]: row[1:] for row in page_tables(response)["workload-radiologists"][1:]}
    data = dashboards.workload(Filters())
    for line in data.radiologists:
        work = line.total
        shown = people[str(line.radiologist)]
        assert shown[:4] == [f"{n:,}" for n in (work.signed, work.weekday_day, work.weekday_night, work.weekend)]


def test_the_workload_page_filters_by_radiologist(history, administrator) -> None:
    second = history["second"]
    response = login(administrator).get(WORKLOAD, {"radiologist": str(second.uuid)})
    assert response.status_code == 200
    rows = page_tables(response)["workload-radiologists"][1:-1]
    assert [r[0] for r in rows] == ["王医生"]


def test_the_timeliness_page_gives_each_priority_and_kind(history, administrator) -> None:
    response = login(administrator).get(TIMELINESS)
    assert response.status_code == 200
    rows = page_tables(response)["timeliness-table"]
    assert rows[1][:3] == ["急诊", "CT", "60（头颅 30）"]
    assert any(r[0] == "合计" for r in rows)


def test_the_savings_page_shows_the_travel_beside_the_price_difference(history, administrator, township) -> None:
    for field, value in hanyin.travel_defaults("XUANWO").items():
        setattr(township, field, value)
    township.save()
    response = login(administrator).get(TRAVEL)
    page = response.content.decode()
    table = {row[0]: row[1:] for row in page_tables(response)["travel-table"][1:]}
    travel = dashboards.travel(Filters())
    xuanwo = next(t for t in travel.townships if t.facility == township)
    assert table["漩涡"][0] == f"{xuanwo.exams:,}" and table["漩涡"][5] == "51.0"
    assert table["漩涡"][6] == "51.00 元 · 204 分钟"
    assert table["漩涡"][7] == f"{xuanwo.travel_cost:,.2f}"
    assert 'href="http://www.sanqinyou.com/minsu/info/1552718185450462.html"' in page
    assert 'id="travel-unknown"' in page


@pytest.mark.parametrize("url", [GROWTH, WORKLOAD, TIMELINESS])
def test_the_reports_are_the_administrators(history, url, technologist_client, radiologist_client) -> None:
    assert technologist_client.get(url).status_code == 403
    assert radiologist_client.get(url).status_code == 403


@pytest.mark.parametrize("url", [GROWTH, WORKLOAD, TIMELINESS])
def test_a_bad_filter_is_a_form_error(administrator, url) -> None:
    response = login(administrator).get(url, {"date_from": "2025-02-30"})
    assert response.status_code == 400
    assert 'id="filter-errors"' in response.content.decode()


@pytest.mark.parametrize(
    ("name", "table", "first"),
    [
        ("growth_export", "exams-month", "月份"),
        ("growth_export", "savings-year", "年份"),
        ("workload_export", "radiologists", "诊断医师"),
        ("workload_export", "months", "诊断医师"),
        ("timeliness_export", "priority-kind", "优先级"),
        ("savings_export", "travel", "乡镇"),
    ],
)
def test_each_report_exports_as_csv_and_xlsx(history, administrator, name, table, first) -> None:
    client = login(administrator)
    url = reverse(f"billing:dashboards:{name}", args=[table, "csv"])
    response = client.get(url)
    assert response.status_code == 200
    text = b"".join(response.streaming_content).decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0][0] == first and len(rows) > 2
    response = client.get(reverse(f"billing:dashboards:{name}", args=[table, "xlsx"]))
    sheet = load_workbook(io.BytesIO(b"".join(response.streaming_content))).active
    assert sheet.cell(1, 1).value == first


def test_an_unknown_report_table_is_404(administrator) -> None:
    client = login(administrator)
    assert client.get(reverse("billing:dashboards:growth_export", args=["nothing", "csv"])).status_code == 404
    assert client.get(reverse("billing:dashboards:timeliness_export", args=["priority-kind", "pdf"])).status_code == 404


def test_the_reports_are_in_the_dashboards_navigation(history, administrator, technologist_client) -> None:
    page = login(administrator).get(SAVINGS).content.decode()
    for url in (GROWTH, WORKLOAD, TIMELINESS, TRAVEL):
        assert f'href="{url}' in page
    assert f'href="{GROWTH}' not in technologist_client.get(SAVINGS).content.decode()


def test_the_reports_speak_english_too(history, administrator) -> None:
    client = login(administrator)
    for url, words in ((GROWTH, "Year over year"), (WORKLOAD, "Weekday nights"), (TIMELINESS, "Time limits met")):
        client.cookies["django_language"] = "en"
        page = client.get(url).content.decode()
        assert words in page, url


def test_the_workload_counts_reports_signed_not_a_button_to_sign_one(history, administrator) -> None:
    """Its first figure and column read "Sign report", the reading page's button."""
    client = login(administrator)
    client.cookies["django_language"] = "en"
    page = client.get(WORKLOAD).content.decode()
    assert "Reports signed" in page and "Sign report" not in page


# The workload table's month row as its template wrote it before the rows were built in
# the view (billing.views.reports.month_row): the view's rows must stay this HTML.
MONTH_ROW_TEMPLATE = """{% load figures %}{% for month, cells, all, href in matrix %}
      <tr><th scope="row"{% if month in partial_keys %} class="partial"{% endif %}><a href="{{ href }}">{{ month }}</a></th>
        {% for w in cells %}<td class="num">{% if w %}{{ w.signed|num }}{% if w.weekday_night or w.weekend %} <span class="aside">({{ w.weekday_night|num }}/{{ w.weekend|num }})</span>{% endif %}{% else %}-{% endif %}</td>{% endfor %}
        <td class="num">{{ all.signed|num }}</td><td class="num">{{ all.weekday_night|num }}</td><td class="num">{{ all.weekend|num }}</td>
        <td class="num">{{ all.mean_minutes|num:1 }}</td><td class="num">{% if all.within_percent is not None %}{{ all.within_percent|num:1 }} %{% endif %}</td></tr>{% endfor %}"""  # noqa: E501


def test_the_workload_months_are_the_html_their_template_gave(history) -> None:
    import re

    from django.template import Context, Template

    from billing.views.reports import month_row

    data = dashboards.workload(Filters(date_from=date(2024, 1, 15), date_to=date(2024, 12, 20)))
    partial = {"2024-01", "2024-12"}
    matrix = [
        (month, [line.months.get(month) for line in data.radiologists], data.by_month[month], f"/x?m={month}&a=<b>")
        for month in data.months
    ]
    assert any(None in cells for _m, cells, _a, _h in matrix)  # a radiologist without reports that month
    context = Context({"matrix": matrix, "partial_keys": partial})
    expected = re.sub(r">\s+<", "><", Template(MONTH_ROW_TEMPLATE).render(context).strip())
    built = "".join(month_row(m, cells, a, href, partial=m in partial) for m, cells, a, href in matrix)
    assert built == expected
