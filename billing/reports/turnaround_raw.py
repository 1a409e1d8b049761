"""The turnaround figures from every signed consult: exact quartiles, the oracle the tests
hold the rollup to, and the reader the rollup itself is computed with."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
from django.conf import settings
from django.db import connection

from billing.reports.filters import Filters
from billing.reports.measures import (
    HISTOGRAM_BIN_MINUTES,
    HISTOGRAM_BINS,
    MEASURE_ENDS,
    STAGES,
    WITHIN_SQL,
    Group,
    Summary,
    group_codes,
)
from consults.models import Priority
from facilities.models import ExamKind


def summarize(values: np.ndarray) -> Summary:
    """n, mean ± SD (sample) and quartiles of the values that are not NaN. numpy's default
    "linear" percentile is PostgreSQL's percentile_cont."""
    values = values[~np.isnan(values)]
    n = int(values.size)
    if not n:
        return Summary()
    q1, median, q3 = (float(q) for q in np.percentile(values, [25, 50, 75]))
    sd = float(values.std(ddof=1)) if n > 1 else None
    return Summary(n, float(values.mean()), sd, q1, median, q3)


def grouped_summaries(values: np.ndarray, order: np.ndarray, codes: np.ndarray, size: int) -> list[Summary]:
    """`summarize` for every group at once. `values` holds one measure for every row (NaN
    where missing), `order` is its ascending argsort (NaN last) and `codes` gives each row's
    group, 0 to size - 1. Quartiles interpolate linearly between the ranked values, as
    numpy's default percentile and PostgreSQL's percentile_cont do."""
    valid = order[: np.count_nonzero(~np.isnan(values))]  # NaN sorts last
    if not valid.size:
        return [Summary() for _i in range(size)]
    x, c = values[valid], codes[valid]  # ascending
    # Ranked within each group: a stable sort by group keeps the values' order inside it.
    ranked = x if size == 1 else x[np.argsort(c, kind="stable")]
    n = np.bincount(c, minlength=size)
    start = np.minimum(np.cumsum(n) - n, x.size - 1)  # a group with no values reads nothing
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.bincount(c, weights=x, minlength=size) / n
        deviation = x - mean[c]
        sd = np.sqrt(np.bincount(c, weights=deviation * deviation, minlength=size) / (n - 1))
    last = np.maximum(n - 1, 0)
    quartiles = []
    for p in (0.25, 0.5, 0.75):
        h = last * p
        lo = np.floor(h).astype(int)
        t = h - lo
        a = ranked[start + lo]
        b = ranked[start + np.minimum(lo + 1, last)]
        # numpy's lerp: from the nearer end, so that t = 1 gives b exactly.
        quartiles.append(np.where(t >= 0.5, b - (b - a) * (1 - t), a + (b - a) * t))
    q1, median, q3 = (q.tolist() for q in quartiles)
    means, sds, counts = mean.tolist(), sd.tolist(), n.tolist()
    return [
        Summary(counts[i], means[i], sds[i] if counts[i] > 1 else None, q1[i], median[i], q3[i])
        if counts[i]
        else Summary()
        for i in range(size)
    ]


@dataclass
class Signed:
    """The few numbers of each signed consult the turnaround page needs, as numpy columns."""

    facility: np.ndarray
    radiologist: np.ndarray  # 0 where none
    kind: np.ndarray  # index into ExamKind.values
    priority: np.ndarray  # index into Priority.values
    year: np.ndarray
    month: np.ndarray
    minutes: np.ndarray  # one row per measure: the consult, then each stage; NaN if not reached
    day: np.ndarray  # the exam date, in days since 1970-01-01
    parts: np.ndarray
    within: np.ndarray  # 1 where signed by its due_at, else 0
    # When it was signed in local time (TIME_ZONE): minute of the day and ISO weekday
    # (1 Monday ... 7 Sunday); -1 where not signed.
    signed_minute: np.ndarray
    signed_weekday: np.ndarray


def _codes_sql(column: str, values: list[str]) -> str:
    branches = " ".join(f"WHEN '{value}' THEN {i}" for i, value in enumerate(values))
    return f"CASE c.{column} {branches} ELSE -1 END"


_TIMES = ("arrived_at", "assigned_at", "opened_at", "signed_at", "delivered_at")
PG_EPOCH_DAYS = 10_957  # 1970-01-01 to 2000-01-01, PostgreSQL's epoch for dates and times
_NO_TIME = np.iinfo(np.int64).min  # -infinity, standing in for NULL


def _signed_postgresql(where: str, params: list[Any]) -> Signed:
    """All the rows as one bytea of fixed-width binary records (each value's send function,
    as PostgreSQL's binary protocol has it), read in place by numpy. Turning 62 thousand rows
    into Python objects, or having PostgreSQL compute and print epochs, cost more than
    everything else together. No value is NULL, so every record has the same width."""
    columns: list[tuple[str, str, str]] = [
        ("facility", "int8send(c.facility_id)", ">i8"),
        ("radiologist", "int8send(COALESCE(c.radiologist_id, 0))", ">i8"),
        ("kind", f"int2send(({_codes_sql('kind', ExamKind.values)})::int2)", ">i2"),
        ("priority", f"int2send(({_codes_sql('priority', Priority.values)})::int2)", ">i2"),
        ("exam_date", "date_send(c.exam_date)", ">i4"),
        ("parts", "int2send(c.body_parts)", ">i2"),
        ("within", f"int2send(({WITHIN_SQL})::int::int2)", ">i2"),
        *((name, f"timestamptz_send(COALESCE(c.{name}, '-infinity'))", ">i8") for name in _TIMES),
        # Local time as the workload's raw query reads it (Django's Extract with tzinfo).
        (
            "signed_minute",
            "int2send(COALESCE((EXTRACT(HOUR FROM c.signed_at AT TIME ZONE %(tz)s) * 60"
            " + EXTRACT(MINUTE FROM c.signed_at AT TIME ZONE %(tz)s))::int2, -1::int2))",
            ">i2",
        ),
        (
            "signed_weekday",
            "int2send(COALESCE(EXTRACT(ISODOW FROM c.signed_at AT TIME ZONE %(tz)s)::int2, -1::int2))",
            ">i2",
        ),
    ]
    record = np.dtype([(name, dtype) for name, _sql, dtype in columns])
    concatenated = " || ".join(sql for _n, sql, _d in columns) % {"tz": "%s"}
    sql = f"SELECT string_agg({concatenated}, ''::bytea) FROM consults_consult c WHERE {where}"  # noqa: S608
    params = [settings.TIME_ZONE] * concatenated.count("%s") + params  # the time zone's, before the WHERE's
    # Django's cursors bind parameters on the client, which rules out binary results: as
    # text the bytea would travel as hex, twice its size and 40 ms more to decode. A plain
    # psycopg cursor on the same connection (same transaction) asks for it in binary.
    import psycopg  # PostgreSQL's driver, present only where PostgreSQL is used

    connection.ensure_connection()
    with psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(sql, params, binary=True)
        row = cursor.fetchone()
    rows = np.frombuffer(bytes(row[0] if row and row[0] is not None else b""), dtype=record)
    day = rows["exam_date"].astype(np.int64) + PG_EPOCH_DAYS
    days = day.astype("datetime64[D]")
    years = days.astype("datetime64[Y]").astype(np.int64) + 1970
    months = days.astype("datetime64[M]").astype(np.int64) % 12 + 1
    times = {name: rows[name].astype(np.int64) for name in _TIMES}
    minutes = np.empty((len(MEASURE_ENDS), rows.size))
    for i, (start, end) in enumerate(MEASURE_ENDS):
        a, b = times[start], times[end]
        # Microseconds to minutes, as date_part('epoch', end - start) / 60.
        minutes[i] = np.where((a == _NO_TIME) | (b == _NO_TIME), np.nan, (b - a) / 60_000_000)
    return Signed(
        rows["facility"].astype(np.int64),
        rows["radiologist"].astype(np.int64),
        rows["kind"].astype(np.int64),
        rows["priority"].astype(np.int64),
        years,
        months,
        minutes,
        day,
        rows["parts"].astype(np.int64),
        rows["within"].astype(np.int64),
        rows["signed_minute"].astype(np.int64),
        rows["signed_weekday"].astype(np.int64),
    )


def _signed_sqlite(where: str, params: list[Any]) -> Signed:
    def minutes_sql(start: str, end: str) -> str:
        return f"(round((julianday(c.{end}) - julianday(c.{start})) * 86400000.0) / 60000.0)"

    sql = f"""
        SELECT c.facility_id, COALESCE(c.radiologist_id, 0), {_codes_sql("kind", ExamKind.values)},
               {_codes_sql("priority", Priority.values)},
               CAST(strftime('%%Y', c.exam_date) AS INTEGER), CAST(strftime('%%m', c.exam_date) AS INTEGER),
               CAST(julianday(c.exam_date) - 2440587.5 AS INTEGER), c.body_parts,
               CASE WHEN {WITHIN_SQL} THEN 1 ELSE 0 END,
               {", ".join(minutes_sql(a, b) for a, b in MEASURE_ENDS)}, c.signed_at
        FROM consults_consult c WHERE {where}
    """  # noqa: S608 -- only constants and placeholders are interpolated
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        fetched = cursor.fetchall()
    # NULL (a stage not reached) becomes NaN.
    table = np.array([r[:-1] for r in fetched], dtype=float).reshape(-1, 9 + len(MEASURE_ENDS))
    facility, radiologist, kind, priority, year, month, day, parts, within = table[:, :9].astype(np.int64).T
    minute, weekday = _local_signing([r[-1] for r in fetched])
    return Signed(
        facility, radiologist, kind, priority, year, month, table[:, 9:].T.copy(), day, parts, within, minute, weekday
    )


def _local_signing(stored: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """SQLite's stored signing times (UTC text) as local minute of the day and ISO weekday."""
    tz = ZoneInfo(settings.TIME_ZONE)
    minutes, weekdays = [], []
    for value in stored:
        if value is None:
            minutes.append(-1)
            weekdays.append(-1)
            continue
        moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
        local = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(tz)
        minutes.append(local.hour * 60 + local.minute)
        weekdays.append(local.isoweekday())
    return np.array(minutes, dtype=np.int64), np.array(weekdays, dtype=np.int64)


def read_consults(where: str, params: list[Any]) -> Signed:
    """The consults matching a WHERE clause on `consults_consult c`, as numpy columns."""
    if connection.vendor == "postgresql":
        return _signed_postgresql(where, params)
    return _signed_sqlite(where, params)


def within_limit(signed: Signed) -> np.ndarray:
    """Whether each consult was signed by its own due_at (False if not signed)."""
    return signed.within.astype(bool)


def signed_groups(filters: Filters, period: str) -> tuple[dict[tuple[str, str], Group], list[tuple[int, int]]]:
    """Every table of the page from one read of the signed consults (62 thousand rows for a
    county), grouped here. Each measure is sorted once; each grouping then orders those
    sorted rows by group with a stable radix sort, so quartiles come from positions."""
    signed = read_consults(*filters.consults_sql())
    size = signed.facility.size
    if not size:
        return {}, []
    within = within_limit(signed).astype(float)
    year, month = signed.year, signed.month
    period_keys = {
        "year": (year, str),
        "quarter": (year * 10 + (month - 1) // 3 + 1, lambda k: f"{k // 10}-Q{k % 10}"),
        "month": (year * 100 + month, lambda k: f"{k // 100}-{k % 100:02d}"),
    }[period]
    kinds = ExamKind.values
    groupings: list[tuple[str, np.ndarray, Any]] = [
        ("all", np.zeros(size, dtype=np.int64), lambda _k: ""),
        ("facility", signed.facility, str),
        ("radiologist", signed.radiologist, lambda k: str(k) if k else "None"),
        ("kind", signed.kind, lambda k: kinds[k]),
        ("period", *period_keys),
    ]
    orders = [np.argsort(m) for m in signed.minutes]  # NaN last
    groups: dict[tuple[str, str], Group] = {}
    for name, column, label in groupings:
        values, codes = group_codes(column)
        summaries = [
            grouped_summaries(m, order, codes, len(values)) for m, order in zip(signed.minutes, orders, strict=True)
        ]
        counts_within = np.bincount(codes, weights=within, minlength=len(values))
        for i, value in enumerate(values.tolist()):
            groups[(name, label(value))] = Group(
                summaries[0][i],
                {k: summaries[j + 1][i] for j, (k, _l, _a, _b) in enumerate(STAGES)},
                int(counts_within[i]),
            )
    consult = signed.minutes[0][~np.isnan(signed.minutes[0])]
    bins = np.minimum(np.floor(consult / HISTOGRAM_BIN_MINUTES), HISTOGRAM_BINS).astype(int)
    numbers, counts = np.unique(bins, return_counts=True)
    return groups, [(int(b), int(n)) for b, n in zip(numbers, counts, strict=True)]
