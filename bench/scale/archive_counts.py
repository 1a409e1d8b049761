#!/usr/bin/env python
"""What the instance counters' readers cost on a large archive, before and after the
counters became the sweep's fold (migration 0017, cloudpacs.counts), in one run, on the
database DATABASE_URL names (SQLite, the embedded default, or PostgreSQL).

Makes a throwaway database (a new SQLite file, or the PostgreSQL database named, dropped
and created again), migrates it and inserts `--studies` studies over `--townships`
townships, each with `--series` series of `--instances` instances, all counted (the
stored counters exact, every series' mark at the last instance), each with a consult
(open ones on the radiologists' worklist). Then, with the Django test client, the pages
that read the counters and one that does not, `--runs` times each (median and p95 ms,
and the queries of one request):

- QIDO-RS: a township's studies (a page of 100, and at offset 2,000), the series across
  the township's studies (a page of 100), the series of one study;
- the study's page (one study's counters, read without the gate);
- the township's page (its studies without a consult, with their counts);
- the radiologists' worklist (reads no counter: the control).

The states of the same rows, alternating `--rounds` times: "before" (the instance table's
index on its series, the readers reading the stored counters alone, as main did before
migration 0017); "probing" (the (series, id) index, and each page probing its series for
instances not folded yet, as main did from 0017 until the gate); "after" (the gate read
with the page's rows, cloudpacs.counts.with_counted: nothing is unfolded here, so only the
single study's reads probe), with main's probe of each series (at eb823d6) and with this
tree's read of the instances above the mark ("above the mark"). Then three scenarios
mid-push, each probe alternating: "a second's push" (`--push-studies` of the township's
newest studies given `--unfolded` instances each that the sweep has not folded), "run 32's
mid-push" (`--unfolded-studies` of them: the township's page of 100 all unfolded), "a
backlog" (those and `--backlog-studies` of other townships: the sweep held back, above
the readers' cap). Per request: this process's CPU, the queries, and on PostgreSQL the
backend's CPU, buffers and the instance table's rows read; on SQLite the virtual
machine's instructions.

    DATABASE_URL=sqlite:///$PWD/var/bench-counts.sqlite3 .venv/bin/python bench/scale/archive_counts.py
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/yunying_bench_counts \\
        .venv/bin/python bench/scale/archive_counts.py --studies 200000
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[2]
BATCH = 5000


def fresh_database(url: str) -> None:
    if url.startswith("sqlite"):
        path = Path(urlsplit(url).path)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    import psycopg

    name = urlsplit(url).path.lstrip("/")
    admin = url.replace(f"/{name}", "/postgres", 1)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')


def insert(cursor: Any, table: str, columns: list[str], rows: Any) -> None:
    sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})"  # noqa: S608
    batch: list[tuple] = []
    for row in rows:
        batch.append(row)
        if len(batch) == BATCH:
            cursor.executemany(sql, batch)
            batch.clear()
    if batch:
        cursor.executemany(sql, batch)


def seed(args: argparse.Namespace) -> dict[str, Any]:
    from django.db import connection, transaction

    from facilities.models import ExamKind, Facility, Modality, User

    county = Facility.objects.create(
        code="C000", name="县医院", short_name="C", pinyin="C", kind=Facility.Kind.COUNTY_HOSPITAL, level=2
    )
    facilities = [
        Facility.objects.create(
            code=f"T{n:03d}",
            name=f"第{n}镇卫生院",
            short_name=f"T{n}",
            pinyin=f"T{n:03d}",
            kind=Facility.Kind.TOWNSHIP_CENTRE,
            level=1,
        )
        for n in range(args.townships)
    ]
    modalities = [Modality.objects.create(facility=f, kind=ExamKind.CT, ae_title=f"{f.code}_CT") for f in facilities]
    technologist = User.objects.create(username="bench_tech", role=User.Role.TECHNOLOGIST, facility=facilities[0])
    radiologist = User.objects.create(username="bench_reader", role=User.Role.RADIOLOGIST, facility=county)
    now = datetime.now(UTC)
    start = now - timedelta(days=730)
    step = (now - timedelta(hours=1) - start) / args.studies
    count, townships = args.studies, args.townships
    per_study = args.series * args.instances
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT COALESCE(MAX(id), 0) FROM cloudpacs_patient")
        base = cursor.fetchone()[0] + 1
        insert(
            cursor,
            "cloudpacs_patient",
            [
                "id", "uuid", "patient_id", "issuer", "name", "name_alphabetic", "name_ideographic",
                "name_phonetic", "name_initials", "birth_date", "sex", "facility_id",
            ],
            (
                (base + n, f"{n:032x}", f"P{n}", "", "Zhang^San", "Zhang^San", "", "", "ZS", date(1960, 1, 1), "M",
                 facilities[n % townships].pk)
                for n in range(count)
            ),
        )  # fmt: skip
        insert(
            cursor,
            "cloudpacs_study",
            [
                "id", "study_uid", "study_date", "study_time", "accession_number", "study_id", "description",
                "referring_physician", "modalities_in_study", "institution_name", "station_name",
                "specific_character_set", "number_of_series", "number_of_instances", "status", "first_received_at",
                "last_received_at", "arrived_at", "facility_id", "modality_id", "patient_id",
                "patient_name_conflict", "patient_name_received", "pending_corrections",
            ],
            (
                (n + 1, f"1.2.826.0.1.3680043.10.9.{n}", (start + n * step).date(), "10:00:00", f"ACC{n}", "1", "",
                 "", "CT", "", "", "", args.series, per_study, "arrived", start + n * step,
                 start + n * step + timedelta(seconds=30), start + n * step + timedelta(seconds=40),
                 facilities[n % townships].pk, modalities[n % townships].pk, base + n, False, "Zhang^San", 0)
                for n in range(count)
            ),
        )  # fmt: skip
        insert(
            cursor,
            "cloudpacs_series",
            [
                "id", "series_uid", "study_id", "modality", "series_number", "description", "body_part_examined",
                "station_name", "institution_name", "manufacturer", "number_of_instances", "counted_through",
            ],
            (
                (n * args.series + s + 1, f"1.2.826.0.1.3680043.10.9.{n}.{s}", n + 1, "CT", s + 1, "", "", "", "",
                 "", args.instances, 0)
                for n in range(count)
                for s in range(args.series)
            ),
        )  # fmt: skip
        insert(
            cursor,
            "cloudpacs_instance",
            [
                "id", "sop_instance_uid", "sop_class_uid", "series_id", "instance_number", "transfer_syntax_uid",
                "storage_key", "size", "sha256", "rows", "columns", "number_of_frames", "received_at",
            ],
            (
                (row, f"1.2.826.0.1.3680043.10.9.{row}.1", "1.2.840.10008.5.1.4.1.1.2", series, i + 1,
                 "1.2.840.10008.1.2.1", f"k/{row}.dcm", 40000, "0" * 64, 512, 512, None, now)
                for series in range(1, count * args.series + 1)
                for i in range(args.instances)
                for row in [(series - 1) * args.instances + i + 1]
            ),
        )  # fmt: skip
        top = count * per_study
        cursor.execute("UPDATE cloudpacs_series SET counted_through = %s", [top])
        cursor.execute("UPDATE cloudpacs_instancecountmark SET through = %s", [top])
        # Every study read; the newest 200 of each township's still open, on the worklist.
        new_uuid = "gen_random_uuid()" if connection.vendor == "postgresql" else "lower(hex(randomblob(16)))"
        cursor.execute(
            "INSERT INTO consults_consult (uuid, kind, exam_date, body_parts, body_part_names, priority,"  # noqa: S608
            " clinical_history, question, status, arrived_at, facility_id, modality_id, study_id, assignment)"
            f" SELECT {new_uuid},"
            " 'CT', study_date, 1, '', 'routine', '', '',"
            " CASE WHEN id > %s THEN 'waiting' ELSE 'signed' END, arrived_at, facility_id, modality_id, id, 'pool'"
            " FROM cloudpacs_study WHERE id <= %s",
            [count - 200 * townships, count - 50],
        )
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE" if connection.vendor == "postgresql" else "ANALYZE")
    return {"township": facilities[0], "technologist": technologist, "radiologist": radiologist}


def set_indexes(before: bool) -> None:
    """The instance table's series index: main's (series) or migration 0017's (series, id)."""
    from django.db import connection

    with connection.cursor() as cursor:
        if before:
            cursor.execute("DROP INDEX IF EXISTS instance_series_order")
            cursor.execute("CREATE INDEX IF NOT EXISTS bench_instance_series ON cloudpacs_instance (series_id)")
        else:
            cursor.execute("DROP INDEX IF EXISTS bench_instance_series")
            cursor.execute("CREATE INDEX IF NOT EXISTS instance_series_order ON cloudpacs_instance (series_id, id)")
        cursor.execute("ANALYZE cloudpacs_instance")


def add_unfolded(studies: list[Any], instances: int) -> None:
    """`instances` more instances in the first series of each study, not folded: as while
    consoles push (or, many, while the sweep is stopped)."""
    from django.db import connection, transaction
    from django.utils import timezone

    from cloudpacs.models import Instance, Series

    top = Instance.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    first = dict(
        Series.objects.filter(study__in=studies).order_by("-pk").values_list("study_id", "pk")
    )  # keys down: each study keeps its lowest-keyed series, its first
    rows = []
    for study in studies:
        for i in range(instances):
            top += 1
            rows.append(
                (top, f"1.2.826.0.1.3680043.10.8.{top}", "1.2.840.10008.5.1.4.1.1.2", first[study.pk], 100 + i,
                 "1.2.840.10008.1.2.1", f"u/{top}.dcm", 40000, "0" * 64, 512, 512, None, timezone.now())
            )  # fmt: skip
    with transaction.atomic(), connection.cursor() as cursor:
        insert(
            cursor,
            "cloudpacs_instance",
            [
                "id", "sop_instance_uid", "sop_class_uid", "series_id", "instance_number", "transfer_syntax_uid",
                "storage_key", "size", "sha256", "rows", "columns", "number_of_frames", "received_at",
            ],
            rows,
        )  # fmt: skip
    _analyze()


def clear_unfolded() -> None:
    """The unfolded instances taken out again (the archive idle, as seeded)."""
    from django.db import connection

    from cloudpacs.models import Instance, InstanceCountMark

    Instance.objects.filter(pk__gt=InstanceCountMark.objects.get(pk=1).through).delete()
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            # The deleted rows' index entries vacuumed away (a few thousand dead rows are below
            # the share at which VACUUM would otherwise leave the indexes alone): the next
            # scenario's reads start as a live archive's would, not through dead entries.
            cursor.execute("VACUUM (INDEX_CLEANUP ON) cloudpacs_instance")
    _analyze()


def _analyze() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE cloudpacs_instance" if connection.vendor == "postgresql" else "ANALYZE")


def main_probes() -> tuple[Any, Any]:
    """The readers' probe as main had it before the instances above the mark were read once
    (at eb823d6; the "each series" states): every series asked about probed for its
    instances after its own mark, in a statement the ORM compiles."""
    from django.db.models import Count, F, OuterRef, Subquery
    from django.db.models.functions import Coalesce

    from cloudpacs import counts
    from cloudpacs.models import Instance, Series, Study

    def by_series(series_pks: Any) -> dict[int, int]:
        pks = list(set(series_pks))
        if not pks:
            return {}
        after_mark = (
            Instance.objects.filter(series_id=OuterRef("pk"), pk__gt=OuterRef("counted_through"))
            .order_by()
            .values("series_id")
            .annotate(count=Count("pk"))
            .values("count")
        )
        rows = (
            Series.objects.filter(pk__in=pks)
            .order_by()
            .annotate(exact=F("number_of_instances") + Coalesce(Subquery(after_mark), 0))
            .values_list("pk", "exact")
        )
        return dict(rows)

    def by_study(study_pks: Any) -> dict[int, int]:
        pks = list(set(study_pks))
        if not pks:
            return {}
        after_marks = (
            Instance.objects.filter(counts.unfolded(), series__study_id=OuterRef("pk"))
            .order_by()
            .values("series__study_id")
            .annotate(count=Count("pk"))
            .values("count")
        )
        rows = (
            Study.objects.filter(pk__in=pks)
            .order_by()
            .annotate(exact=F("number_of_instances") + Coalesce(Subquery(after_marks), 0))
            .values_list("pk", "exact")
        )
        return dict(rows)

    return by_series, by_study


def _backend_ticks() -> int:
    """PostgreSQL: the CPU ticks of this connection's backend so far."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        fields = Path(f"/proc/{cursor.fetchone()[0]}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def _pg_counters() -> tuple[int, int]:
    """PostgreSQL: the buffers this database's backends have read or found, and the instance
    table's rows they have read (index entries returned by its indexes' scans, rows of its
    sequential scans), so far."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_force_next_flush()")
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT (SELECT blks_hit + blks_read FROM pg_stat_database WHERE datname = current_database()),"
            " (SELECT COALESCE(SUM(idx_tup_read), 0) FROM pg_stat_user_indexes WHERE relname = 'cloudpacs_instance')"
            " + (SELECT COALESCE(seq_tup_read, 0) FROM pg_stat_user_tables WHERE relname = 'cloudpacs_instance')"
        )
        blocks, rows = cursor.fetchone()
        return int(blocks), int(rows)


def _sqlite_steps(call: Any) -> int:
    """SQLite: the virtual machine's instructions one call of `call` runs, in hundreds (its
    progress handler, called every 100)."""
    from django.db import connection

    steps = [0]

    def step() -> int:
        steps[0] += 1
        return 0

    connection.ensure_connection()
    raw = connection.connection
    raw.set_progress_handler(step, 100)
    try:
        call()
    finally:
        raw.set_progress_handler(None, 0)
    return steps[0]


def measure(label: str, pages: dict[str, Any], runs: int) -> None:
    """Per request: the wall-clock (noise under load), this process's CPU (the client, the
    view and, on SQLite, the database), and on PostgreSQL the backend's CPU and the
    buffers it touched (both counted over all runs, per request)."""
    from django.db import connection

    postgresql = connection.vendor == "postgresql"
    for name, call in pages.items():
        queries: list[str] = []

        def counted(execute: Any, sql: str, params: Any, many: bool, context: Any, found: list = queries) -> Any:
            found.append(sql)
            return execute(sql, params, many, context)

        with connection.execute_wrapper(counted):
            response = call()
        assert response.status_code in (200, 204), (name, response.status_code)
        walls, cpus = [], []
        steps = "" if postgresql else f"  VM steps {_sqlite_steps(call) / 10:7.1f} k"
        ticks = _backend_ticks() if postgresql else 0
        blocks, rows = _pg_counters() if postgresql else (0, 0)
        if postgresql:
            # The statistics reads' own buffers (read twice, nothing between), taken off below.
            again = _pg_counters()
            own = (again[0] - blocks, again[1] - rows)
            blocks, rows = again
        for _ in range(runs):
            began, cpu = time.perf_counter(), time.process_time()
            call()
            cpus.append((time.process_time() - cpu) * 1000)
            walls.append((time.perf_counter() - began) * 1000)
        database = steps
        if postgresql:
            backend_ms = (_backend_ticks() - ticks) * 1000 / os.sysconf("SC_CLK_TCK") / runs
            blocks_after, rows_after = _pg_counters()
            database = (
                f"  backend CPU {backend_ms:6.2f} ms  buffers {(blocks_after - blocks - own[0]) / runs:8.1f}"
                f"  instance rows {(rows_after - rows - own[1]) / runs:8.1f}"
            )
        print(
            f"  {label:<22} {name:<27} wall {statistics.median(walls):7.1f} ms"
            f"  process CPU {statistics.median(cpus):7.2f} ms{database}  queries {len(queries)}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=100_000)
    parser.add_argument("--townships", type=int, default=20)
    parser.add_argument("--series", type=int, default=2)
    parser.add_argument("--instances", type=int, default=4)
    parser.add_argument("--push-studies", type=int, default=10)
    parser.add_argument("--unfolded-studies", type=int, default=100)
    parser.add_argument("--backlog-studies", type=int, default=1000)
    parser.add_argument("--unfolded", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=2, help="times each pair of states alternates")
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres", "sqlite")):
        sys.exit("DATABASE_URL must name a database of the run's own (it is dropped and made again)")
    fresh_database(url)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cloudpacs.settings")
    sys.path.insert(0, str(ROOT))
    import django
    from django.core.management import call_command

    django.setup()
    from django.conf import settings
    from django.db import connection
    from django.db.models import Value
    from django.test import Client
    from django.test.utils import setup_test_environment
    from django.urls import reverse

    from cloudpacs import counts
    from cloudpacs.models import Study
    from facilities.models import ApiToken

    setup_test_environment()
    # One connection for the run (each request would otherwise open one): its backend's CPU is read.
    connection.settings_dict["CONN_MAX_AGE"] = None
    settings.ALLOWED_HOSTS = ["*"]
    settings.DEBUG = False
    call_command("migrate", verbosity=0)
    began = time.perf_counter()
    seeded = seed(args)
    total = args.studies * args.series * args.instances
    print(
        f"{connection.vendor}: seeded {args.studies} studies, {args.studies * args.series} series, {total} instances"
        f" in {time.perf_counter() - began:.0f} s; load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    township, technologist, radiologist = seeded["township"], seeded["technologist"], seeded["radiologist"]
    token = ApiToken.objects.create(technologist, name="bench", scope=ApiToken.Scope.READ)[1]
    qido = Client(HTTP_AUTHORIZATION=f"Token {token}", HTTP_ACCEPT="application/dicom+json")
    tech = Client()
    tech.force_login(technologist)
    reader = Client()
    reader.force_login(radiologist)
    newest = Study.objects.filter(facility=township).order_by("-study_date", "-study_time", "-id").first()
    assert newest is not None
    pages = {
        "QIDO studies, page of 100": lambda: qido.get("/dicomweb/studies", {"limit": 100}),
        "QIDO studies, offset 2000": lambda: qido.get("/dicomweb/studies", {"limit": 100, "offset": 2000}),
        "QIDO series, page of 100": lambda: qido.get("/dicomweb/series", {"limit": 100}),
        "QIDO series of one study": lambda: qido.get(f"/dicomweb/studies/{newest.study_uid}/series"),
        "study page": lambda: tech.get(reverse("cloudpacs:study", args=[newest.study_uid])),
        "township page": lambda: tech.get(reverse("consults:facility", args=[township.uuid])),
        "worklist (no counter)": lambda: reader.get(reverse("consults:worklist")),
    }
    exact = (counts.exact_rows, counts.exact_series, counts.exact_studies)
    import consults.views.pages as township_pages

    township_exact = township_pages.exact_studies
    probes = {
        # Each series asked about probed after its mark (main at eb823d6).
        "each series": main_probes(),
        # The instances above the mark read once, each series probed above the cap (this tree).
        "above the mark": (counts.exact_by_series, counts.exact_by_study),
    }
    gates = {
        # The stored counters alone (main before migration 0017).
        "before": lambda queryset: queryset.annotate(**{counts.COUNTED: Value(True)}),
        # Every page probes its series for unfolded instances (main from 0017 to the gate).
        "probing": lambda queryset: queryset.annotate(**{counts.COUNTED: Value(False)}),
        # The gate read with the page's rows (cloudpacs.counts.with_counted).
        "after": counts.with_counted,
    }

    def reading(state: str, probe: str = "each series", gate: str = "after") -> None:
        before = state == "before"
        set_indexes(before)
        counts.with_counted = township_pages.with_counted = gates[gate]  # type: ignore[assignment]
        counts.exact_by_series, counts.exact_by_study = probes[probe]  # type: ignore[assignment]
        if before:
            counts.exact_rows = lambda rows, **names: None  # type: ignore[assignment]
            counts.exact_series = lambda items, **gate: list(items)  # type: ignore[assignment]
            counts.exact_studies = lambda items, **gate: list(items)  # type: ignore[assignment]
            township_pages.exact_studies = lambda items, **gate: list(items)  # type: ignore[assignment]
        else:
            counts.exact_rows, counts.exact_series, counts.exact_studies = exact  # type: ignore[assignment]
            township_pages.exact_studies = township_exact  # type: ignore[assignment]

    idle = {
        "before": {"gate": "before"},
        "probing": {"gate": "probing"},
        "after": {"probe": "each series"},
        "after, above the mark": {"probe": "above the mark"},
    }
    for _round in range(args.rounds):
        for state, how in idle.items():
            reading(state, **how)
            measure(state, pages, args.runs)
    newest_first = Study.objects.order_by("-study_date", "-study_time", "-id")
    in_page = list(newest_first.filter(facility=township)[: args.unfolded_studies])
    elsewhere = list(newest_first.exclude(facility=township)[: args.backlog_studies])
    stored = args.series * args.instances
    for scenario, studies in (
        ("a second's push", in_page[: args.push_studies]),
        ("run 32's mid-push", in_page),
        ("a backlog", in_page + elsewhere),
    ):
        add_unfolded(studies, args.unfolded)
        print(
            f"  {scenario}: {len(studies)} studies with {args.unfolded} unfolded instances each"
            f" ({len(studies) * args.unfolded}), {min(len(studies), len(in_page))} of them in the township's page",
            flush=True,
        )
        answers = set()
        for _round in range(args.rounds):
            for probe in probes:
                reading("after", probe)
                measure(f"mid-push, {probe}", pages, args.runs)
                found = qido.get("/dicomweb/studies", {"limit": 100}).json()
                answers.add(tuple(study["00201208"]["Value"][0] for study in found))
        (answer,) = answers  # both ways answer alike
        print(f"  the newest study's count: {answer[0]} (stored {stored} + {args.unfolded})", flush=True)
        clear_unfolded()
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
