"""The turnaround figures from the rollup: summed counts, sums, squares and histograms."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
from django.db import connection

from billing import histogram
from billing.models import (
    MEASURES,
    DailyRollup,
    MonthlyReaderTurnaround,
    MonthlyRollup,
    MonthlyTownshipTurnaround,
    TownshipTurnaroundSpan,
)
from billing.reports.filters import Filters, rollup_split
from billing.reports.measures import (
    STAGES,
    Group,
    Summary,
    group_codes,
    period_keys,
)
from billing.reports.turnaround_raw import PG_EPOCH_DAYS
from facilities.models import ExamKind


@dataclass
class _Rolled:
    """The rollup rows of the selection as numpy columns, and their histogram records."""

    facility: np.ndarray
    radiologist: np.ndarray
    kind: np.ndarray
    day: np.ndarray  # days since 1970-01-01
    within: np.ndarray
    n: np.ndarray  # one row per measure (MEASURES)
    sums: np.ndarray
    sumsqs: np.ndarray
    keys: np.ndarray  # of the histogram records (billing.histogram)
    counts: np.ndarray
    record_row: np.ndarray  # the rollup row of each record


def _rollup_wheres(filters: Filters) -> list[_Part]:
    """Each part of the rollup to read (`_Part`)."""
    clauses, params = filters.sql("r", dates=False)
    common = ["r.signed > 0", *clauses]
    split = rollup_split(filters.date_from, filters.date_to)
    parts = []
    if split.months is not None:
        clauses, values = list(common), list(params)
        for sql, bound in (("r.month >= %s", split.months[0]), ("r.month <= %s", split.months[1])):
            if bound is not None:
                clauses.append(sql)
                values.append(bound)
        parts.append((MonthlyRollup._meta.db_table, "r.month", " AND ".join(clauses), values, *_ROW_KEYS))
    if split.days:
        ranges = " OR ".join("r.day BETWEEN %s AND %s" for _range in split.days)
        values = [*params, *(d for days in split.days for d in days)]
        parts.append((DailyRollup._meta.db_table, "r.day", " AND ".join([*common, f"({ranges})"]), values, *_ROW_KEYS))
    return parts


def grain_parts(filters: Filters) -> tuple[list[_Part], _Part] | None:
    """The whole months of the filters from the per-township rows and from the
    per-radiologist monthly rows, when they can serve: the filters name no township and no
    radiologist (those rows add them up) and cover a whole month. None otherwise.

    The township's table reads its all-time rows when the filters have no dates, its
    yearly rows for the whole years inside them, and its monthly rows for the months left."""
    split = rollup_split(filters.date_from, filters.date_to)
    if filters.facility is not None or filters.radiologist is not None or split.months is None:
        return None
    # No township or radiologist is named here: the kind is all the filters can add.
    kind_clauses, kind_values = filters.sql("r", dates=False)
    first, last = split.months

    def part(table: str, date_sql: str, bounds: list[tuple[str, Any]], facility: str, radiologist: str) -> _Part:
        """Rows of `table` within `bounds` ((SQL, value or None for a clause without one))."""
        clauses = ["r.signed > 0", *kind_clauses, *(sql for sql, _v in bounds)]
        values = [*kind_values, *(v for _s, v in bounds if v is not None)]
        return (table, date_sql, " AND ".join(clauses), values, facility, radiologist)

    month_bounds = [(sql, bound) for sql, bound in (("r.month >= %s", first), ("r.month <= %s", last)) if bound]
    readers = part(
        MonthlyReaderTurnaround._meta.db_table, "r.month", month_bounds, "0", "COALESCE(r.radiologist_id, 0)"
    )
    spans = TownshipTurnaroundSpan._meta.db_table
    townships = MonthlyTownshipTurnaround._meta.db_table
    if first is None and last is None:
        return [part(spans, _year_sql(), [("r.year IS NULL", None)], "r.facility_id", "0")], readers
    # The whole years inside the months, then the months before and after them.
    first_year = None if first is None else (first.year if first.month == 1 else first.year + 1)
    last_year = None if last is None else (last.year if last.month == 12 else last.year - 1)
    if first_year is not None and last_year is not None and first_year > last_year:
        return [part(townships, "r.month", month_bounds, "r.facility_id", "0")], readers
    year_bounds: list[tuple[str, Any]] = [("r.year IS NOT NULL", None)]
    year_bounds += [(sql, y) for sql, y in (("r.year >= %s", first_year), ("r.year <= %s", last_year)) if y]
    parts = [part(spans, _year_sql(), year_bounds, "r.facility_id", "0")]
    if first is not None and first_year is not None and first < date(first_year, 1, 1):
        before = [("r.month >= %s", first), ("r.month < %s", date(first_year, 1, 1))]
        parts.append(part(townships, "r.month", before, "r.facility_id", "0"))
    if last is not None and last_year is not None and last > date(last_year, 12, 1):
        after = [("r.month > %s", date(last_year, 12, 1)), ("r.month <= %s", last)]
        parts.append(part(townships, "r.month", after, "r.facility_id", "0"))
    return parts, readers


def _year_sql() -> str:
    """A date for a yearly or all-time row, which only the table by township reads (it is
    grouped by township alone, so the date does not matter): January 1st of its year."""
    if connection.vendor == "postgresql":
        return "make_date(COALESCE(r.year, 2000)::int, 1, 1)"
    return "(COALESCE(r.year, 2000) || '-01-01')"


def _kind_code_sql() -> str:
    branches = " ".join(f"WHEN '{value}' THEN {i}" for i, value in enumerate(ExamKind.values))
    return f"CASE r.kind {branches} ELSE -1 END"


# A part of the rollup to read: table, date column, WHERE, parameters, and the SQL of its
# facility and radiologist (0 in a table that adds them up).
_Part = tuple[str, str, str, list[Any], str, str]
_ROW_KEYS = ("r.facility_id", "COALESCE(r.radiologist_id, 0)")


def _rolled_postgresql(
    table: str, date_sql: str, where: str, params: list[Any], facility: str, radiologist: str
) -> _Rolled:
    """As `_signed_postgresql`: fixed-width binary records, plus the rows' histograms
    concatenated in the same order, both read in place by numpy."""
    columns: list[tuple[str, str, str]] = [
        ("facility", f"int8send(({facility})::int8)", ">i8"),
        ("radiologist", f"int8send(({radiologist})::int8)", ">i8"),
        ("kind", f"int2send(({_kind_code_sql()})::int2)", ">i2"),
        ("day", f"date_send({date_sql})", ">i4"),
        ("within", "int4send(r.within_limit)", ">i4"),
        *(
            column
            for m in MEASURES
            for column in (
                (f"{m}_n", f"int4send(r.{m}_n)", ">i4"),
                (f"{m}_sum", f"float8send(r.{m}_sum)", ">f8"),
                (f"{m}_sumsq", f"float8send(r.{m}_sumsq)", ">f8"),
            )
        ),
        ("length", "int4send(length(r.histograms))", ">i4"),
    ]
    record = np.dtype([(name, dtype) for name, _sql, dtype in columns])
    concatenated = " || ".join(sql for _n, sql, _d in columns)
    sql = (
        f"SELECT string_agg({concatenated}, ''::bytea ORDER BY r.id), "  # noqa: S608
        f"string_agg(r.histograms, ''::bytea ORDER BY r.id) FROM {table} r WHERE {where}"
    )
    import psycopg  # PostgreSQL's driver, present only where PostgreSQL is used

    connection.ensure_connection()
    with psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(sql, params, binary=True)
        found = cursor.fetchone()
    rows = np.frombuffer(bytes(found[0]) if found and found[0] is not None else b"", dtype=record)
    blob = bytes(found[1]) if found and found[1] is not None else b""
    lengths = rows["length"].astype(np.int64)
    return _rolled({name: rows[name] for name, _sql, _d in columns}, blob, lengths, PG_EPOCH_DAYS)


def _rolled_sqlite(
    table: str, date_sql: str, where: str, params: list[Any], facility: str, radiologist: str
) -> _Rolled:
    names = ["facility", "radiologist", "kind", "day", "within"]
    names += [f"{m}_{part}" for m in MEASURES for part in ("n", "sum", "sumsq")]
    sql = f"""
        SELECT {facility}, {radiologist}, {_kind_code_sql()},
               CAST(julianday({date_sql}) - 2440587.5 AS INTEGER), r.within_limit,
               {", ".join(f"r.{m}_n, r.{m}_sum, r.{m}_sumsq" for m in MEASURES)}, r.histograms
        FROM {table} r WHERE {where} ORDER BY r.id
    """  # noqa: S608 -- only constants and placeholders are interpolated
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        fetched = cursor.fetchall()
    figures = np.array([r[:-1] for r in fetched], dtype=float).reshape(-1, len(names))
    blobs = [bytes(r[-1] or b"") for r in fetched]
    return _rolled(
        {name: figures[:, i] for i, name in enumerate(names)},
        b"".join(blobs),
        np.array([len(b) for b in blobs], dtype=np.int64),
        0,
    )


def _rolled(columns: dict[str, np.ndarray], blob: bytes, lengths: np.ndarray, day_offset: int) -> _Rolled:
    keys, counts = histogram.keys_and_counts(blob)
    size = columns["facility"].size
    per_row = lengths // histogram.RECORD.itemsize
    return _Rolled(
        facility=columns["facility"].astype(np.int64),
        radiologist=columns["radiologist"].astype(np.int64),
        kind=columns["kind"].astype(np.int64),
        day=columns["day"].astype(np.int64) + day_offset,
        within=columns["within"].astype(float),
        n=np.array([columns[f"{m}_n"] for m in MEASURES], dtype=float).reshape(len(MEASURES), size),
        sums=np.array([columns[f"{m}_sum"] for m in MEASURES], dtype=float).reshape(len(MEASURES), size),
        sumsqs=np.array([columns[f"{m}_sumsq"] for m in MEASURES], dtype=float).reshape(len(MEASURES), size),
        keys=keys,
        counts=counts,
        record_row=np.repeat(np.arange(size, dtype=np.int32), per_row),
    )


def _concatenated(parts: list[_Rolled]) -> _Rolled:
    if len(parts) == 1:
        return parts[0]
    offsets = np.cumsum([0, *(p.facility.size for p in parts)])[:-1]
    return _Rolled(
        facility=np.concatenate([p.facility for p in parts]),
        radiologist=np.concatenate([p.radiologist for p in parts]),
        kind=np.concatenate([p.kind for p in parts]),
        day=np.concatenate([p.day for p in parts]),
        within=np.concatenate([p.within for p in parts]),
        n=np.concatenate([p.n for p in parts], axis=1),
        sums=np.concatenate([p.sums for p in parts], axis=1),
        sumsqs=np.concatenate([p.sumsqs for p in parts], axis=1),
        keys=np.concatenate([p.keys for p in parts]),
        counts=np.concatenate([p.counts for p in parts]),
        record_row=np.concatenate([p.record_row + o for p, o in zip(parts, offsets, strict=True)]),
    )


@dataclass
class _Durations:
    """The histogram records of the durations (not the plot's), ready to be binned by group:
    each record's rollup row, its cell (measure * SIZE + bin) and its count."""

    row: np.ndarray
    cell: np.ndarray
    count: np.ndarray

    @classmethod
    def of(cls, rolled: _Rolled) -> _Durations:
        measure = rolled.keys // histogram.KEY_STRIDE
        keep = measure < len(MEASURES)
        kept = rolled.keys[keep].astype(np.int32)
        cell = (kept // histogram.KEY_STRIDE) * histogram.SIZE + kept % histogram.KEY_STRIDE
        return cls(rolled.record_row[keep], cell, rolled.counts[keep])


def _rollup_summaries(rolled: _Rolled, durations: _Durations, codes: np.ndarray, size: int) -> list[list[Summary]]:
    """For each measure, the Summary of each group: n, mean and SD from the summed counts,
    sums and squares; quartiles from the summed histograms."""
    measures = len(MEASURES)
    cells = codes[durations.row] * (measures * histogram.SIZE) + durations.cell
    dense = np.bincount(cells, weights=durations.count, minlength=size * measures * histogram.SIZE).reshape(
        size * measures, histogram.SIZE
    )
    quartiles = histogram.quartiles_minutes(dense).reshape(size, measures, 3)
    result = []
    for m in range(measures):
        n = np.bincount(codes, weights=rolled.n[m], minlength=size)
        total = np.bincount(codes, weights=rolled.sums[m], minlength=size)
        squares = np.bincount(codes, weights=rolled.sumsqs[m], minlength=size)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = total / n
            sd = np.sqrt(np.maximum(squares - total * mean, 0.0) / (n - 1))
        summaries = []
        for g in range(size):
            count = round(float(n[g]))
            if not count:
                summaries.append(Summary())
                continue
            q1, median, q3 = (float(q) for q in quartiles[g, m])
            if count == 1:  # one consult: its quartiles are its value, which the sum holds exactly
                q1 = median = q3 = float(mean[g])
            summaries.append(Summary(count, float(mean[g]), float(sd[g]) if count > 1 else None, q1, median, q3))
        result.append(summaries)
    return result


def _grouped(rolled: _Rolled, period: str, names: tuple[str, ...], groups: dict[tuple[str, str], Group]) -> None:
    """Add to `groups` the groups of each grouping in `names` over the rows of `rolled`."""
    if not rolled.facility.size:
        return
    kinds = ExamKind.values
    groupings: dict[str, tuple[Any, Any]] = {
        "all": (lambda: np.zeros(rolled.facility.size, dtype=np.int64), lambda _k: ""),
        "facility": (lambda: rolled.facility, str),
        "radiologist": (lambda: rolled.radiologist, lambda k: str(k) if k else "None"),
        "kind": (lambda: rolled.kind, lambda k: kinds[k]),
    }
    durations = _Durations.of(rolled)
    for name in names:
        if name == "period":
            column, label = period_keys(rolled.day, period)
        else:
            make, label = groupings[name]
            column = make()
        values, codes = group_codes(column)
        codes = codes.astype(np.int64)
        summaries = _rollup_summaries(rolled, durations, codes, len(values))
        counts_within = np.bincount(codes, weights=rolled.within, minlength=len(values))
        for i, value in enumerate(values.tolist()):
            groups[(name, label(value))] = Group(
                summaries[0][i],
                {k: summaries[j + 1][i] for j, (k, _l, _a, _b) in enumerate(STAGES)},
                round(float(counts_within[i])),
            )


def _plot_bins(rolled: _Rolled) -> list[tuple[int, int]]:
    key = rolled.keys.astype(np.int64)
    plot = key // histogram.KEY_STRIDE == histogram.PLOT_MEASURE
    counts = np.bincount(
        key[plot] % histogram.KEY_STRIDE,
        weights=rolled.counts[plot],
        minlength=histogram.PLOT_BINS + 1,
    )
    return [(b, int(n)) for b, n in enumerate(counts.tolist()) if n]


def rollup_groups(
    filters: Filters, period: str, *, grains: bool = True
) -> tuple[dict[tuple[str, str], Group], list[tuple[int, int]]]:
    """`_groups` from the rollup. Over whole months without a township or radiologist
    filter, the table by township reads the per-township monthly rows and every other
    table the per-radiologist ones (a province's monthly rows carry each radiologist's
    histograms for each township: tens of millions of records); the days at either end of
    a range, and every other selection, read the daily and monthly rows themselves."""
    read = _rolled_postgresql if connection.vendor == "postgresql" else _rolled_sqlite
    groups: dict[tuple[str, str], Group] = {}
    by_grain = grain_parts(filters) if grains else None
    everything = ("all", "facility", "radiologist", "kind", "period")
    if by_grain is None:
        rolled = _concatenated([read(*part) for part in _rollup_wheres(filters)])
        _grouped(rolled, period, everything, groups)
        return groups, _plot_bins(rolled) if rolled.facility.size else []
    days = [read(*part) for part in _rollup_wheres(filters) if part[1] == "r.day"]
    township_parts, reader_part = by_grain
    townships = _concatenated([*(read(*part) for part in township_parts), *days])
    readers = _concatenated([read(*reader_part), *days])
    _grouped(townships, period, ("facility",), groups)
    _grouped(readers, period, ("all", "radiologist", "kind", "period"), groups)
    return groups, _plot_bins(readers) if readers.facility.size else []
