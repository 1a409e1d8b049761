"""Time the dashboards' queries and pages on PostgreSQL at county and province scale.

    .venv/bin/python bench/dashboards/run.py [--database NAME] [--scales 1,10,100] [--runs 3]

Uses its own database (default yunying_bench_dashboards on the server of DATABASE_URL, or
postgres://postgres@127.0.0.1:5432): creates it, migrates, and loads the Hanyin demo
(`seed_hanyin`: 62,305 exams with their ledger entries). Each larger scale is then reached
in bulk inside PostgreSQL: `INSERT ... SELECT` over `generate_series` copies the demo's
consults (new UUIDs, same townships, dates and times) and prices a ledger entry for every
copy, so 100 x is 6,230,500 exams, a province's worth behind the same eleven townships.
Secondary indexes are dropped during the load and rebuilt after, then ANALYZE.

With --townships N (a province's shape: N townships, not N times the exams), the demo's
eleven townships are copied until there are N, each copy with the rollup rows of the
township it copies (daily and monthly), and the per-township and per-radiologist months
are recomputed: a province's rollup for 62,305 x N / 11 exams. The consults are not
copied, so the exam list is not timed there (--skip exams).

Timed: each dashboard query function (billing.dashboards) and each page through Django's
test client (view, query, template: the server's time, no network), median of --runs
after one warm-up run. Prints a Markdown table. With --queries, each case is run once more
with its SQL recorded, and its number of queries and their time are printed beside it."""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

DEMO_EXAMS = 62_305


def database_urls(name: str) -> tuple[str, str]:
    base = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    parts = urlsplit(base)
    if parts.scheme not in ("postgres", "postgresql"):
        parts = urlsplit("postgres://postgres@127.0.0.1:5432/postgres")
    return urlunsplit(parts._replace(path="/postgres")), urlunsplit(parts._replace(path=f"/{name}"))


def ensure_database(admin_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def setup_django(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cloudpacs.settings")
    import django

    django.setup()
    from django.conf import settings

    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    settings.DEBUG = False


def exam_count() -> int:
    from consults.models import Consult

    return Consult.objects.count()


def load_demo() -> None:
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    if exam_count() == 0:
        started = time.monotonic()
        call_command("seed_hanyin", verbosity=0, stdout=open(os.devnull, "w"))  # noqa: SIM115
        print(f"seed_hanyin: {exam_count():,} exams in {time.monotonic() - started:.0f} s", flush=True)


TABLES = ("consults_consult", "billing_ledgerentry")


def _secondary_indexes(cursor: Any) -> list[tuple[str, str]]:
    """Indexes not backing a constraint: safe to drop and rebuild around a bulk load."""
    cursor.execute(
        """
        SELECT i.indexname, i.indexdef FROM pg_indexes i
        WHERE i.tablename = ANY(%s) AND i.schemaname = 'public'
          AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)
        """,
        [list(TABLES)],
    )
    return cursor.fetchall()


def grow_to(copies: int) -> None:
    """Make the consults (and ledger) `copies` times the demo by copying the demo's rows."""
    from django.db import connection, transaction

    have = exam_count()
    target = DEMO_EXAMS * copies
    if have >= target:
        return
    started = time.monotonic()
    with connection.cursor() as cursor:
        cursor.execute(
            """SELECT column_name FROM information_schema.columns
               WHERE table_name = 'consults_consult' AND column_name NOT IN ('id', 'uuid', 'study_id')
               ORDER BY ordinal_position"""
        )
        columns = [r[0] for r in cursor.fetchall()]
        cursor.execute("SELECT min(id), max(id) FROM consults_consult")
        first_id, last_demo_id = cursor.fetchone()
        last_demo_id = first_id + DEMO_EXAMS - 1
        indexes = _secondary_indexes(cursor)
    col_list = ", ".join(columns)
    src_list = ", ".join(f"s.{c}" for c in columns)
    missing_copies = (target - have) // DEMO_EXAMS
    batch = 5
    with transaction.atomic(), connection.cursor() as cursor:
        # Foreign-key triggers would check every copied row against rows it was copied from.
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute("SET LOCAL maintenance_work_mem = '512MB'")
        for name, _definition in indexes:
            cursor.execute(f'DROP INDEX "{name}"')
        done = 0
        while done < missing_copies:
            n = min(batch, missing_copies - done)
            cursor.execute("SELECT max(id) FROM consults_consult")
            (before,) = cursor.fetchone()
            cursor.execute(
                f"""
                INSERT INTO consults_consult (uuid, {col_list})
                SELECT gen_random_uuid(), {src_list}
                FROM generate_series(1, %s) AS g CROSS JOIN consults_consult s
                WHERE s.id BETWEEN %s AND %s
                ORDER BY g, s.id
                """,  # noqa: S608 -- column names from the catalogue
                [n, first_id, last_demo_id],
            )
            cursor.execute(
                """
                INSERT INTO billing_ledgerentry (exam_kind, exam_date, body_parts, county_price, township_price,
                    saving, reason, recorded_at, consult_id, facility_id, reverses_id, schedule_id)
                SELECT c.kind, c.exam_date, c.body_parts, pc.price_per_part, pt.price_per_part,
                       (pc.price_per_part - pt.price_per_part) * c.body_parts, '', c.signed_at, c.id,
                       c.facility_id, NULL, ps.id
                FROM consults_consult c
                JOIN billing_priceschedule ps ON ps.effective_from <= c.exam_date
                     AND (ps.effective_to IS NULL OR ps.effective_to >= c.exam_date)
                JOIN billing_priceitem pc ON pc.schedule_id = ps.id AND pc.exam_kind = c.kind AND pc.level = 2
                JOIN billing_priceitem pt ON pt.schedule_id = ps.id AND pt.exam_kind = c.kind AND pt.level = 1
                WHERE c.id > %s AND c.signed_at IS NOT NULL
                """,
                [before],
            )
            done += n
            print(f"  copies {done}/{missing_copies}: {time.monotonic() - started:.0f} s", flush=True)
        for _name, definition in indexes:
            cursor.execute(definition)
    with connection.cursor() as cursor:
        for table in TABLES:
            cursor.execute(f"VACUUM ANALYZE {table}")
    print(f"grown to {exam_count():,} exams in {time.monotonic() - started:.0f} s", flush=True)
    rebuild_rollup()


# Copied per township with the township they copy; the patients' rows are the patients of
# that township (a copy's patients are its original's, keyed the same: counted per township).
ROLLUP_COPIED = ("billing_dailyrollup", "billing_monthlyrollup", "billing_billedpatients")


def spread_to_townships(townships: int) -> None:
    """Copy the demo's townships, and their rollup rows, until there are `townships`."""
    from datetime import date

    from django.db import connection, transaction

    from billing import rollup
    from billing.models import MonthlyRollup
    from facilities.models import Facility

    originals = Facility.objects.filter(kind=Facility.Kind.TOWNSHIP_CENTRE).exclude(code__contains="-")
    have = Facility.objects.filter(kind=Facility.Kind.TOWNSHIP_CENTRE).count()
    per_copy = originals.count()
    copies = -(-(townships - have) // per_copy)  # rounded up
    if copies <= 0:
        return
    started = time.monotonic()
    done = (have - per_copy) // per_copy
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            """SELECT column_name FROM information_schema.columns
               WHERE table_name = 'facilities_facility'
                 AND column_name NOT IN ('id', 'uuid', 'code', 'name', 'short_name', 'pinyin')
               ORDER BY ordinal_position"""
        )
        rest = [r[0] for r in cursor.fetchall()]
        cursor.execute(
            f"""
            INSERT INTO facilities_facility (uuid, code, name, short_name, pinyin, {", ".join(rest)})
            SELECT gen_random_uuid(), f.code || '-' || g, f.name || g, f.short_name || g, f.pinyin || g,
                   {", ".join(f"f.{c}" for c in rest)}
            FROM facilities_facility f CROSS JOIN generate_series(%s, %s) AS g
            WHERE f.kind = 'township' AND f.code NOT LIKE '%%-%%'
            """,  # noqa: S608 -- column names from the catalogue
            [done + 1, done + copies],
        )
        cursor.execute(
            """CREATE TEMP TABLE township_copy ON COMMIT DROP AS
               SELECT n.id AS new_id, o.id AS old_id FROM facilities_facility n
               JOIN facilities_facility o ON o.code = split_part(n.code, '-', 1)
               WHERE n.code LIKE '%%-%%' AND n.id NOT IN (
                   SELECT DISTINCT facility_id FROM billing_monthlyrollup)"""
        )
        for table in ROLLUP_COPIED:
            cursor.execute(
                """SELECT column_name FROM information_schema.columns WHERE table_name = %s
                   AND column_name NOT IN ('id', 'facility_id') ORDER BY ordinal_position""",
                [table],
            )
            columns = [r[0] for r in cursor.fetchall()]
            cursor.execute(
                f"""
                INSERT INTO {table} (facility_id, {", ".join(columns)})
                SELECT m.new_id, {", ".join(f"r.{c}" for c in columns)}
                FROM {table} r JOIN township_copy m ON r.facility_id = m.old_id
                """  # noqa: S608 -- names from the catalogue
            )
    print(
        f"townships copied: {Facility.objects.filter(kind='township').count():,} in {time.monotonic() - started:.0f} s",
        flush=True,
    )
    months = sorted(set(MonthlyRollup.objects.values_list("month", flat=True)))
    for month in months:
        following = date(month.year + month.month // 12, month.month % 12 + 1, 1)
        with transaction.atomic():
            rollup.refresh_township_months(month, following, None)
            rollup.refresh_turnaround_grains(month, following, None)
    with connection.cursor() as cursor:
        for table in (
            *ROLLUP_COPIED,
            "billing_monthlytownshiprollup",
            "billing_monthlytownshipturnaround",
            "billing_monthlyreaderturnaround",
            "billing_townshipturnaroundspan",
        ):
            cursor.execute(f"VACUUM ANALYZE {table}")
    print(f"province's rollup ready in {time.monotonic() - started:.0f} s", flush=True)


def rebuild_rollup() -> None:
    """The dashboards read the daily rollup: recompute it from the copied rows, as
    `manage.py rebuild_rollup` does, and time it."""
    from django.db import connection

    from billing import rollup

    started = time.monotonic()
    rows = rollup.rebuild()
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE billing_dailyrollup")
    print(f"rollup rebuilt: {rows:,} rows in {time.monotonic() - started:.0f} s", flush=True)


def ensure_rollup() -> None:
    """A database grown before the rollup existed gets one."""
    from billing.models import DailyRollup

    if not DailyRollup.objects.exists():
        rebuild_rollup()


def timed(fn: Callable[[], Any], runs: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def cases() -> list[tuple[str, Callable[[], Any]]]:
    from datetime import date

    from django.test import Client
    from django.urls import reverse

    from billing import dashboards
    from billing.dashboards import Filters
    from facilities.models import Facility, User

    admin = User.objects.get(username="admin")
    client = Client()
    client.force_login(admin)
    xuanwo = Facility.objects.get(code="XUANWO")
    quarter = Filters(date_from=date(2025, 1, 1), date_to=date(2025, 3, 31), facility=xuanwo)
    one_year = {"date_from": "2024-01-01", "date_to": "2024-12-31"}
    xuanwo_ct_2024 = {"township": str(xuanwo.uuid), "modality": "CT", "year": "2024", "basis": "all"}

    def page(name: str, params: dict[str, str] | None = None) -> Callable[[], Any]:
        url = reverse(f"billing:dashboards:{name}")

        def get() -> None:
            response = client.get(url, params or {})
            assert response.status_code == 200, (url, response.status_code)

        return get

    return [
        ("query: volume (Tables 1-2)", lambda: dashboards.volume(Filters())),
        ("query: savings (all tables)", lambda: dashboards.savings(Filters())),
        ("query: turnaround, all groupings with quartiles", lambda: dashboards.turnaround(Filters())),
        ("query: turnaround, one township, one quarter", lambda: dashboards.turnaround(quarter)),
        ("query: turnaround from raw rows (exact quartiles)", lambda: dashboards.turnaround(Filters(), source="raw")),
        ("page: /dashboards/volume/", page("volume")),
        ("page: /dashboards/savings/", page("savings")),
        ("page: /dashboards/turnaround/", page("turnaround")),
        ("page: /dashboards/turnaround/?one year", page("turnaround", one_year)),
        ("page: /dashboards/turnaround/?Xuanwo", page("turnaround", {"township": str(xuanwo.uuid)})),
        ("query: growth (year over year, month over month)", lambda: dashboards.growth(Filters())),
        ("query: workload (radiologists by month, nights, weekends)", lambda: dashboards.workload(Filters())),
        ("query: within the time limit by priority and kind", lambda: dashboards.within_limit(Filters())),
        ("query: travel (per exam, per patient, journeys)", lambda: dashboards.travel(Filters())),
        ("page: /dashboards/growth/", page("growth")),
        ("page: /dashboards/workload/", page("workload")),
        ("page: /dashboards/timeliness/", page("timeliness")),
        ("page: /dashboards/travel/", page("travel")),
        ("page: /dashboards/exams/ (first page)", page("exams")),
        ("page: /dashboards/exams/?Xuanwo CT 2024 (first page)", page("exams", xuanwo_ct_2024)),
    ]


def query_counts(fn: Callable[[], Any]) -> tuple[int, float, str]:
    """One more run of `fn` with its SQL recorded: how many queries, their time in ms (as
    the database driver saw it) and the slowest one's first words."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        fn()
    queries = captured.captured_queries
    seconds = [float(q["time"]) for q in queries]
    slowest = max(queries, key=lambda q: float(q["time"]))["sql"][:80] if queries else ""
    return len(queries), sum(seconds) * 1000, slowest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", default="yunying_bench_dashboards")
    parser.add_argument("--scales", default="1,10,100", help="multiples of the demo's 62,305 exams")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--skip", default="", help="comma-separated parts of case names not to time")
    parser.add_argument("--townships", type=int, default=0, help="copy the townships and their rollup to this many")
    parser.add_argument("--queries", action="store_true", help="also count each case's SQL queries and their time")
    args = parser.parse_args()
    admin_url, url = database_urls(args.database)
    ensure_database(admin_url, args.database)
    setup_django(url)
    load_demo()
    results: dict[int, dict[str, float]] = {}
    scales = [int(s) for s in args.scales.split(",")]
    for scale in scales:
        grow_to(scale)
        ensure_rollup()
        if args.townships:
            spread_to_townships(args.townships)
        count = exam_count()
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"timing at {count:,} exams (load average {load} on {os.cpu_count()} CPUs)", flush=True)
        results[count] = {}
        skip = [s for s in args.skip.split(",") if s]
        for name, fn in cases():
            if any(part in name for part in skip):
                continue
            results[count][name] = timed(fn, args.runs, args.warmup)
            line = f"  {name}: {results[count][name]:,.0f} ms"
            if args.queries:
                n, sql_ms, slowest = query_counts(fn)
                line += f" ({n} queries, {sql_ms:,.0f} ms of SQL; slowest: {slowest})"
            print(line, flush=True)
    counts = list(results)
    print()
    print(f"| ms (median of {args.runs}) | " + " | ".join(f"{c:,} exams" for c in counts) + " |")
    print("|---|" + "---:|" * len(counts))
    names = list(dict.fromkeys(name for c in counts for name in results[c]))
    for name in names:
        cells = [f"{results[c][name]:,.0f}" if name in results[c] else "not run" for c in counts]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
