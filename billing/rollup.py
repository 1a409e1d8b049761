"""Keeping the dashboards' daily rollup (billing.models.DailyRollup) equal to the raw rows.

The rollup of a (day, facility) is never adjusted by increments: it is recomputed from
that day's consults and ledger entries and replaced, so a refresh can only make it right.
It is refreshed
- in the same transaction as each ledger entry or reversal (billing.services), which is
  when billing learns that a township's consult was signed;
- for the consults that changed (created, assigned, opened, signed, delivered...): the
  workflow publishes each change on the consults' change feed (consults.changes, an outbox
  written in the step's transaction) and `follow_consult_changes` takes them, every minute
  from the task that records pending savings (consults sit below billing and cannot call
  it; billing follows them). Following a change twice gives the same rows, and changes
  are taken in the refresh's transaction, so a crash leaves them to the next run;
- for any range of days by `manage.py rebuild_rollup`, and by `seed_hanyin` after loading
  the history.

The rollup's interface, for the reports that read it (billing/reports/):
- `DailyRollup` (day) and `MonthlyRollup` (month: its days added up), one row per
  township (`facility`), exam `kind` and `radiologist` (None: not read yet), with the
  columns of `COLUMNS`: `exams` and `exam_parts` (consults not cancelled, by exam date),
  `signed`, `within_limit` (signed by `due_at`), per measure of `billing.models.MEASURES`
  its count, sum and sum of squares in minutes, `histograms` (billing.histogram), when the
  reports were signed in local time (`signed_weekend`, and `weekday_signing`: records of
  minute of the day and count, for any night hours), and the ledger's `ledger_entries`,
  `ledger_parts` and `saving` (reversals included) and `billed` (originals not reversed);
- `MonthlyTownshipTurnaround` (month x township x kind) and `MonthlyReaderTurnaround`
  (month x radiologist x kind): the turnaround columns (`TURNAROUND_SUMMED` and
  `histograms`) with the radiologists, respectively the townships, added up; the
  radiologists' also `signed_weekend` and `weekday_signing` (the workload page's);
- `BilledPatients` (month x township x kind, and all time x township x kind or every
  kind): the distinct patients of the exams billed, with their keys, since patients do
  not add up across months (`refresh_patients`, from the ledger with the months);
- `TownshipTurnaroundSpan` (year, or all time with `year` None, x township x kind): the
  per-township months added up, for the table by township over whole years or all time;
- `MonthlyTownshipRollup` (month x township x kind): `TOWNSHIP_SUMMED` (volume, signed,
  ledger) with the radiologists added up, for reports not by radiologist;
- `billing.reports.filters.rollup_parts`/`rollup_split` choose the monthly rows of whole
  months (`by_radiologist=False`: the per-township months where no radiologist is asked
  for) and the daily rows of the days at either end of a range.
A new column is computed in `_compute` from the raw rows (`read_consults` and the
ledger), summed into the months by `_refresh_months` (every column but those of `BLOBS`
adds up; those are merged key by key), and needs a migration that rebuilds the rollup (as
billing 0007 and 0015 do); the tests hold every column to the raw rows."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
from django.db import connection, transaction
from django.db.models import Count, Max, Min, Q, Sum
from django.db.models.functions import ExtractYear

from billing import histogram
from billing.models import (
    MEASURES,
    BilledPatients,
    DailyRollup,
    LedgerEntry,
    MonthlyReaderTurnaround,
    MonthlyRollup,
    MonthlyTownshipRollup,
    MonthlyTownshipTurnaround,
    RollupCursor,
    TownshipTurnaroundSpan,
)
from billing.reports.filters import Filters
from billing.reports.turnaround_raw import read_consults, within_limit
from consults.models import Consult, Priority
from consults.services import taken_changes
from facilities.models import ExamKind, Facility

_EPOCH = date(1970, 1, 1)
# The exams, signed and within the limit of the priorities other than routine (routine's
# are the rest): emergency_exams, emergency_signed, ... (billing.models.RollupFigures).
RANKED_PRIORITIES = (Priority.EMERGENCY, Priority.URGENT)
PRIORITY_COLUMNS = tuple(f"{p}_{c}" for p in RANKED_PRIORITIES for c in ("exams", "signed", "within"))
_BATCH = 2000


COLUMNS = (
    "day",
    "facility_id",
    "kind",
    "radiologist_id",
    "exams",
    "exam_parts",
    "signed",
    "within_limit",
    "signed_weekend",
    *PRIORITY_COLUMNS,
    *(f"{m}_{part}" for m in MEASURES for part in ("n", "sum", "sumsq")),
    "histograms",
    "weekday_signing",
    "ledger_entries",
    "ledger_parts",
    "saving",
    "billed",
)
_LEDGER_AT = COLUMNS.index("ledger_entries")
# The columns of records (billing.histogram.RECORD) merged key by key; every other adds up.
BLOBS = ("histograms", "weekday_signing")
Row = list[Any]


def _per_group(group: np.ndarray, keys: np.ndarray, size: int, counts: np.ndarray | None = None) -> list[bytes]:
    """The records (key, count) of each group 0 to size - 1, keys ascending: the count of
    each key in the group, or with `counts` the sum of those counts."""
    combined = group.astype(np.int64) * 65536 + keys.astype(np.int64)
    if counts is None:
        pairs, summed = np.unique(combined, return_counts=True)
    else:
        pairs, where = np.unique(combined, return_inverse=True)
        summed = np.bincount(where.reshape(-1), weights=counts, minlength=pairs.size).round().astype(np.int64)
    blob = histogram.encode(pairs % 65536, summed)
    bounds = (np.searchsorted(pairs // 65536, np.arange(size + 1)) * histogram.RECORD.itemsize).tolist()
    return [blob[bounds[i] : bounds[i + 1]] for i in range(size)]


def _merged(group: np.ndarray, blobs: list[bytes], size: int) -> list[bytes]:
    """The records of many rows (`blobs`, row i in group[i]) merged key by key per group."""
    lengths = np.array([len(b) for b in blobs], dtype=np.int64) // histogram.RECORD.itemsize
    keys, counts = histogram.keys_and_counts(b"".join(blobs))
    return _per_group(np.repeat(group, lengths), keys, size, counts)


def _compute(filters: Filters) -> list[Row]:
    """The rollup rows (values in COLUMNS order) of the consults and ledger entries that
    `filters` selects (by date and facility only), computed from the raw rows."""
    consults = read_consults(*filters.consults_sql(signed_only=False))
    rows: dict[tuple[date, int, str, int | None], Row] = {}
    if consults.facility.size:
        keys = np.stack([consults.day, consults.facility, consults.kind, consults.radiologist], axis=1)
        unique, group = np.unique(keys, axis=0, return_inverse=True)
        group = group.reshape(-1)
        size = len(unique)

        def total(weights: np.ndarray | None = None, *, whole: bool = True) -> list[Any]:
            sums = np.bincount(group, weights=weights, minlength=size)
            return sums.round().astype(np.int64).tolist() if whole else sums.tolist()

        signed = ~np.isnan(consults.minutes[0])
        weekend = signed & (consults.signed_weekday >= 6)
        weekday = signed & ~weekend
        columns: list[list[Any]] = [
            total(),
            total(consults.parts.astype(float)),
            total(signed.astype(float)),
            total(within_limit(consults).astype(float)),
            total(weekend.astype(float)),
        ]
        within = within_limit(consults)
        for priority in RANKED_PRIORITIES:
            chosen = consults.priority == Priority.values.index(priority)
            columns += [total(chosen.astype(float)), total((chosen & signed).astype(float))]
            columns.append(total((chosen & within).astype(float)))
        histogram_keys = []
        histogram_groups = []
        for m in range(len(MEASURES)):
            minutes = consults.minutes[m]
            # The turnaround is of signed consults: a consult assigned or opened but not yet
            # signed keeps its stages out, as the raw figures do (turnaround_raw).
            present = signed & ~np.isnan(minutes)
            x = np.where(present, minutes, 0.0)
            columns += [total(present.astype(float)), total(x, whole=False), total(x * x, whole=False)]
            histogram_keys.append(m * histogram.KEY_STRIDE + histogram.bins_of(minutes[present] * 60))
            histogram_groups.append(group[present])
        plot = histogram.plot_bins_of(consults.minutes[0][signed])
        histogram_keys.append(histogram.PLOT_MEASURE * histogram.KEY_STRIDE + plot)
        histogram_groups.append(group[signed])
        histograms = _per_group(np.concatenate(histogram_groups), np.concatenate(histogram_keys), size)
        signing = _per_group(group[weekday], consults.signed_minute[weekday], size)
        kinds = ExamKind.values
        for i, (day, facility, kind, radiologist) in enumerate(unique.tolist()):
            key = (_EPOCH + timedelta(days=day), facility, kinds[kind], radiologist or None)
            rows[key] = [*key, *(c[i] for c in columns), histograms[i], signing[i], 0, 0, Decimal("0.00"), 0]
    ledger = (
        LedgerEntry.objects.filter(filters.ledger_q())
        .values_list("exam_date", "facility_id", "exam_kind", "consult__radiologist_id")
        .annotate(
            n=Count("id"),
            parts=Sum("body_parts"),
            saving=Sum("saving"),
            originals=Count("id", filter=Q(reverses__isnull=True)),
        )
        .order_by()
    )
    empty: list[Any] = [0] * (_LEDGER_AT - 4)
    for name in BLOBS:
        empty[COLUMNS.index(name) - 4] = b""
    for day, facility, kind, radiologist, n, parts, saving, originals in ledger:
        key = (day, facility, kind, radiologist)
        if key not in rows:
            rows[key] = [*key, *empty, 0, 0, Decimal("0.00"), 0]
        # A reversal is in its original's group (same consult and exam date): the originals
        # less the reversals are the originals not reversed.
        billed = originals - (n - originals)
        rows[key][_LEDGER_AT:] = [n, parts or 0, (saving or Decimal(0)).quantize(Decimal("0.01")), billed]
    return list(rows.values())


def _write(model: type[DailyRollup | MonthlyRollup], first: str, rows: list[Row]) -> None:
    """Insert rows whose values are in COLUMNS order, with `first` (day or month) first."""
    _insert(model, (first, *COLUMNS[1:]), rows)


def _insert(model: type[Any], columns: tuple[str, ...], rows: list[Row]) -> None:
    """Insert rows whose values are in the order of `columns`."""
    if connection.vendor == "postgresql":
        # COPY: a rebuild writes tens of thousands of rows, and model instances cost more
        # than computing them.
        import psycopg  # PostgreSQL's driver, present only where PostgreSQL is used

        connection.ensure_connection()
        sql = f"COPY {model._meta.db_table} ({', '.join(columns)}) FROM STDIN"
        with psycopg.Cursor(connection.connection) as cursor, cursor.copy(sql) as copy:
            for row in rows:
                copy.write_row(row)
        return
    model.objects.bulk_create((model(**dict(zip(columns, r, strict=True))) for r in rows), _BATCH)


def _month(day: date) -> date:
    return day.replace(day=1)


def _next_month(month: date) -> date:
    return (month + timedelta(days=32)).replace(day=1)


_SUMMED = [c for c in COLUMNS[4:] if c not in BLOBS]


def _refresh_months(first: date, last: date, facility: Facility | None, *, all_time: bool = True) -> int:
    """Recompute the monthly rows of the months from first's to last's (of one facility,
    or all) by adding up their daily rows; histograms are merged bin by bin. With
    all_time False the all-time patients are left to the caller (a rebuild does them once)."""
    start, end = _month(first), _next_month(_month(last))
    daily = DailyRollup.objects.filter(day__gte=start, day__lt=end)
    monthly = MonthlyRollup.objects.filter(month__gte=start, month__lt=end)
    if facility is not None:
        daily, monthly = daily.filter(facility=facility), monthly.filter(facility=facility)
    sums: dict[tuple[date, int, str, int | None], list[Any]] = {}
    groups: dict[tuple[date, int, str, int | None], int] = {}
    group: list[int] = []
    blobs: list[list[bytes]] = [[] for _name in BLOBS]
    for day, facility_id, kind, radiologist_id, *values in daily.values_list(
        "day", "facility_id", "kind", "radiologist_id", *BLOBS, *_SUMMED
    ):
        key = (_month(day), facility_id, kind, radiologist_id)
        figures = values[len(BLOBS) :]
        if key in sums:
            sums[key] = [x + y for x, y in zip(sums[key], figures, strict=True)]
        else:
            sums[key] = list(figures)
            groups[key] = len(groups)
        group.append(groups[key])
        for i in range(len(BLOBS)):
            blobs[i].append(bytes(values[i]))
    merged = [_merged(np.array(group, dtype=np.int64), b, len(groups)) for b in blobs]
    rows = []
    for key, figures in sums.items():
        by_name = dict(zip(_SUMMED, figures, strict=True))
        by_name.update({name: merged[i][groups[key]] for i, name in enumerate(BLOBS)})
        rows.append([*key, *(by_name[c] for c in COLUMNS[4:])])
    readers_before: set[int | None] = set(monthly.filter(signed__gt=0).values_list("radiologist_id", flat=True))
    monthly.delete()
    _write(MonthlyRollup, "month", rows)
    refresh_township_months(start, end, facility)
    refresh_turnaround_grains(start, end, facility, readers_before)
    refresh_patients(start, end, facility, all_time=all_time)
    return len(rows)


TOWNSHIP_SUMMED = (
    "exams",
    "exam_parts",
    "signed",
    "ledger_entries",
    "ledger_parts",
    "saving",
    "billed",
    "within_limit",
    *PRIORITY_COLUMNS,
)


def refresh_township_months(start: date, end: date, facility: Facility | None) -> None:
    """Recompute the per-township monthly rows (MonthlyTownshipRollup) of the months from
    `start` to before `end` (of one facility, or all) from the monthly rows."""
    scope = Q(month__gte=start, month__lt=end)
    if facility is not None:
        scope &= Q(facility=facility)
    rows = (
        MonthlyRollup.objects.filter(scope)
        .values_list("month", "facility_id", "kind")
        .annotate(*(Sum(name) for name in TOWNSHIP_SUMMED))
        .order_by()
    )
    computed = [list(row) for row in rows]
    MonthlyTownshipRollup.objects.filter(scope).delete()
    _insert(MonthlyTownshipRollup, ("month", "facility_id", "kind", *TOWNSHIP_SUMMED), computed)


# The turnaround figures, as TurnaroundFigures holds them; all but the histograms add up.
TURNAROUND_SUMMED = ("signed", "within_limit", *(f"{m}_{part}" for m in MEASURES for part in ("n", "sum", "sumsq")))
_WHOLE = {"signed", "within_limit", "signed_weekend", *(f"{m}_n" for m in MEASURES)}
# The per-radiologist months also keep when the reports were signed (the workload page's).
READER_SUMMED = (*TURNAROUND_SUMMED, "signed_weekend")
READER_BLOBS = ("histograms", "weekday_signing")
GRAIN_LOCK = "turnaround-grains"


def merge_up(
    source: Iterable[tuple[Any, ...]],
    width: int,
    summed: tuple[str, ...] = TURNAROUND_SUMMED,
    blobs: int = 1,
) -> list[Row]:
    """Rows of (*key, histograms[, weekday_signing], *summed), `width` values of key and
    `blobs` columns of records, added up by key: the figures summed and the records merged
    key by key, all in bulk with numpy. Returns rows of (*key, *summed, *records)."""
    index: dict[tuple[Any, ...], int] = {}
    groups: list[int] = []
    records: list[list[bytes]] = [[] for _b in range(blobs)]
    figures: list[tuple[Any, ...]] = []
    for row in source:
        groups.append(index.setdefault(tuple(row[:width]), len(index)))
        for b in range(blobs):
            records[b].append(bytes(row[width + b]))
        figures.append(row[width + blobs :])
    if not index:
        return []
    size = len(index)
    group = np.array(groups, dtype=np.int64)
    table = np.array(figures, dtype=float).reshape(len(groups), len(summed))
    sums = [np.bincount(group, weights=table[:, j], minlength=size) for j in range(table.shape[1])]
    columns: list[list[Any]] = [
        s.round().astype(np.int64).tolist() if name in _WHOLE else s.tolist()
        for name, s in zip(summed, sums, strict=True)
    ]
    merged = [_merged(group, r, size) for r in records]
    return [[*key, *(c[g] for c in columns), *(m[g] for m in merged)] for key, g in index.items()]


def refresh_turnaround_grains(
    start: date, end: date, facility: Facility | None, readers_before: set[int | None] | None = None
) -> None:
    """Recompute the turnaround's per-township and per-radiologist monthly rows of the
    months from `start` to before `end` from the monthly rows (of one facility, or all).
    A facility's refresh recomputes the rows of the radiologists it had (`readers_before`)
    or has; refreshes take turns on a lock, since every facility adds to those rows."""
    months = Q(month__gte=start, month__lt=end)
    monthly = MonthlyRollup.objects.filter(months, signed__gt=0)
    townships = MonthlyTownshipTurnaround.objects.filter(months)
    own = monthly if facility is None else monthly.filter(facility=facility)
    if facility is not None:
        townships = townships.filter(facility=facility)
    summed = ("histograms", *TURNAROUND_SUMMED)
    rows = merge_up(own.values_list("month", "facility_id", "kind", *summed).order_by(), 3)
    townships.delete()
    _insert(MonthlyTownshipTurnaround, ("month", "facility_id", "kind", *TURNAROUND_SUMMED, "histograms"), rows)
    refresh_township_spans(set(range(start.year, (end - timedelta(days=1)).year + 1)), facility)

    RollupCursor.objects.select_for_update().get_or_create(name=GRAIN_LOCK)
    readers = MonthlyReaderTurnaround.objects.filter(months)
    source = monthly
    if facility is not None:
        affected = (readers_before or set()) | set(own.values_list("radiologist_id", flat=True))
        if not affected:
            return
        chosen = Q(radiologist__in=[r for r in affected if r is not None])
        if None in affected:
            chosen |= Q(radiologist__isnull=True)
        readers, source = readers.filter(chosen), source.filter(chosen)
    rows = merge_up(
        source.values_list("month", "radiologist_id", "kind", *READER_BLOBS, *READER_SUMMED).order_by(),
        3,
        READER_SUMMED,
        len(READER_BLOBS),
    )
    readers.delete()
    _insert(MonthlyReaderTurnaround, ("month", "radiologist_id", "kind", *READER_SUMMED, *READER_BLOBS), rows)


def refresh_township_spans(years: set[int], facility: Facility | None) -> None:
    """Recompute the per-township rows of those years (of one facility, or all) from the
    per-township months, then the all-time rows from the yearly ones."""
    summed = ("histograms", *TURNAROUND_SUMMED)
    columns = ("year", "facility_id", "kind", *TURNAROUND_SUMMED, "histograms")
    months = MonthlyTownshipTurnaround.objects.filter(month__year__in=years)
    spans = TownshipTurnaroundSpan.objects.all()
    if facility is not None:
        months, spans = months.filter(facility=facility), spans.filter(facility=facility)
    yearly = months.annotate(year=ExtractYear("month")).values_list("year", "facility_id", "kind", *summed)
    rows = merge_up(yearly.order_by(), 3)
    spans.filter(Q(year__in=years) | Q(year__isnull=True)).delete()
    _insert(TownshipTurnaroundSpan, columns, rows)
    every_year = spans.filter(year__isnull=False).values_list("facility_id", "kind", *summed).order_by()
    _insert(TownshipTurnaroundSpan, columns, [[None, *row] for row in merge_up(every_year, 2)])


def patient_keys(entries: Iterable[tuple[Any, ...]]) -> dict[tuple[Any, ...], np.ndarray]:
    """Rows of (*group, patient id or None, consult id), grouped: each group's patient keys,
    sorted and distinct (BilledPatients.keys' rule: an exam with no study is a patient of
    its own, keyed by minus its consult's id)."""
    found: dict[tuple[Any, ...], list[int]] = {}
    for *group, patient, consult in entries:
        found.setdefault(tuple(group), []).append(patient if patient is not None else -consult)
    return {group: np.unique(np.array(keys, dtype=np.int64)) for group, keys in found.items()}


def billed_entries() -> Any:
    """The ledger entries of the exams billed: originals not reversed (the travel page's)."""
    return LedgerEntry.objects.filter(reverses__isnull=True, reversed_by__isnull=True)


def refresh_patients(start: date, end: date, facility: Facility | None, *, all_time: bool = True) -> None:
    """Recompute the patients billed (BilledPatients) in the months from `start` to before
    `end` (at one facility, or all) from the ledger, then the all-time rows of the
    facilities concerned from their months."""
    months = Q(month__gte=start, month__lt=end)
    entries = billed_entries().filter(exam_date__gte=start, exam_date__lt=end)
    rows = BilledPatients.objects.filter(months)
    if facility is not None:
        entries, rows = entries.filter(facility=facility), rows.filter(facility=facility)
    found = patient_keys(
        (_month(day), facility_id, kind, patient, consult)
        for day, facility_id, kind, patient, consult in entries.values_list(
            "exam_date", "facility_id", "exam_kind", "consult__study__patient_id", "consult_id"
        ).order_by()
    )
    rows.delete()
    _insert(
        BilledPatients,
        ("month", "facility_id", "kind", "patients", "keys"),
        [[*group, int(keys.size), keys.astype("<i8").tobytes()] for group, keys in found.items()],
    )
    if all_time:
        refresh_all_time_patients(facility)


def refresh_all_time_patients(facility: Facility | None) -> None:
    """Each township's patients over every month, of each kind and of every kind, as the
    union of its months' keys."""
    monthly = BilledPatients.objects.filter(month__isnull=False)
    all_time = BilledPatients.objects.filter(month__isnull=True)
    if facility is not None:
        monthly, all_time = monthly.filter(facility=facility), all_time.filter(facility=facility)
    keys: dict[tuple[int, str], list[np.ndarray]] = {}
    for facility_id, kind, blob in monthly.values_list("facility_id", "kind", "keys").order_by():
        month_keys = np.frombuffer(bytes(blob), dtype="<i8")
        keys.setdefault((facility_id, kind), []).append(month_keys)
        keys.setdefault((facility_id, ""), []).append(month_keys)
    rows = []
    for (facility_id, kind), parts in keys.items():
        union = np.unique(np.concatenate(parts)).astype("<i8")
        rows.append([None, facility_id, kind, int(union.size), union.tobytes()])
    all_time.delete()
    _insert(BilledPatients, ("month", "facility_id", "kind", "patients", "keys"), rows)


def _replace(filters: Filters, *, all_time: bool = True) -> int:
    """Recompute the daily rows of a date range (and facility), then their months."""
    if filters.date_from is None or filters.date_to is None:
        raise ValueError("a refresh of the rollup names its first and last day")
    scope = Q(day__gte=filters.date_from, day__lte=filters.date_to)
    if filters.facility:
        scope &= Q(facility=filters.facility)
    rows = _compute(filters)
    DailyRollup.objects.filter(scope).delete()
    _write(DailyRollup, "day", rows)
    _refresh_months(filters.date_from, filters.date_to, filters.facility, all_time=all_time)
    return len(rows)


def refresh_day(day: date, facility: Facility) -> int:
    """Recompute one (day, facility) of the rollup; call it inside the transaction that
    changed its consults or ledger entries. Refreshes of one facility take turns (a lock
    on its row), so two of them never insert the same rows."""
    with transaction.atomic():
        Facility.objects.select_for_update().filter(pk=facility.pk).first()
        return _replace(Filters(date_from=day, date_to=day, facility=facility))


def refresh_days(days: Iterable[tuple[date, int]]) -> int:
    """refresh_day for each (day, facility id)."""
    facilities: dict[int, Facility] = {}
    rows = 0
    for day, facility_id in sorted(set(days)):
        facility = facilities.get(facility_id) or Facility.objects.get(pk=facility_id)
        facilities[facility_id] = facility
        rows += refresh_day(day, facility)
    return rows


def rebuild(date_from: date | None = None, date_to: date | None = None) -> int:
    """Recompute the rollup of a range of days (every day by default), a month at a time,
    each month in its own transaction. Returns the number of rows written."""
    firsts, lasts = [], []
    for model in (Consult, LedgerEntry):
        found = model.objects.aggregate(first=Min("exam_date"), last=Max("exam_date"))  # type: ignore[attr-defined]
        if found["first"] is not None:
            firsts.append(found["first"])
            lasts.append(found["last"])
    start = date_from or (min(firsts) if firsts else None)
    end = date_to or (max(lasts) if lasts else None)
    written = 0
    if start is not None and end is not None:
        month = start.replace(day=1)
        while month <= end:
            following = (month + timedelta(days=32)).replace(day=1)
            first, last = max(month, start), min(following - timedelta(days=1), end)
            with transaction.atomic():
                # Each township's all-time patients once at the end, not after every month.
                written += _replace(Filters(date_from=first, date_to=last), all_time=False)
            month = following
    if date_from is None and date_to is None:
        # Days outside every exam's date (their consults since removed) go too.
        stale = DailyRollup.objects.all()
        stale_months = MonthlyRollup.objects.all()
        if start is not None and end is not None:
            stale = stale.filter(Q(day__lt=start) | Q(day__gt=end))
            stale_months = stale_months.filter(Q(month__lt=_month(start)) | Q(month__gt=end))
        stale.delete()
        stale_months.delete()
        grains = [
            MonthlyTownshipTurnaround.objects.all(),
            MonthlyReaderTurnaround.objects.all(),
            MonthlyTownshipRollup.objects.all(),
        ]
        spans = TownshipTurnaroundSpan.objects.all()
        if start is not None and end is not None:
            grains = [g.filter(Q(month__lt=_month(start)) | Q(month__gt=end)) for g in grains]
            spans = spans.filter(Q(year__lt=start.year) | Q(year__gt=end.year))
        for stale_grain in grains:
            stale_grain.delete()
        spans.delete()
        patients = BilledPatients.objects.filter(month__isnull=False)
        if start is not None and end is not None:
            patients = patients.filter(Q(month__lt=_month(start)) | Q(month__gt=end))
        patients.delete()
    with transaction.atomic():
        refresh_all_time_patients(None)
    return written


def follow_consult_changes(limit: int = 5000) -> int:
    """Refresh the days of the consults the workflow reported changed since the last run
    (consults' change feed), `limit` changes per transaction, until none is left; returns
    the number of changes followed. The changes are taken in the refresh's transaction:
    if it fails they are still there for the next run."""
    followed = 0
    while True:
        with taken_changes(limit) as changes:
            refresh_days((c.exam_date, c.facility_id) for c in changes)
        followed += len(changes)
        if len(changes) < limit:
            return followed
