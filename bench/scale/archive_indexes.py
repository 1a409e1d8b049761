#!/usr/bin/env python
"""The study's per-instance update and the queries that find studies by their arrival, on a
large archive, with the study table's indexes as they were before migration 0015 (the
arrival time in two indexes) and as they are now, in one run (issue 27).

Creates a throwaway PostgreSQL database, migrates it, inserts `--studies` studies in SQL
(one patient each, over `--townships` townships and two years; most with a consult, a share
of a kind the county does not read (no consult, kept for viewing), a few still receiving),
then, for each index set:

- the study update that every instance of a known series sent until migration 0017
  (`_insert_counted`'s study part then, one transaction each, synchronous commit off), `--updates` times to one
  study created last, as a push does: the backend's CPU per update (from /proc) and how
  many of the updates PostgreSQL made HOT (pg_stat_user_tables);
- the stability sweep's reads (`has_stable_studies`, the candidates of
  `claim_stable_studies`) and a township page's studies without a consult
  (before: by `-last_received_at`, as the page asked then; after:
  `consults.views.pages.pending_studies`): median and p95 ms over `--runs`.

    BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/yunying_bench_indexes \\
        .venv/bin/python bench/scale/archive_indexes.py --studies 1000000

The database named there is dropped and created again: give it a name of its own.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[2]

# The study table's indexes that differ between the two sets. Before: the arrival time in
# two indexes (the field's db_index, and the sweep's (status, last_received_at)); after:
# migration 0015's.
INDEX_SETS = {
    "before (last_received_at indexed)": {
        "drop": ["study_receiving", "study_facility_arrival"],
        "create": [
            "CREATE INDEX cloudpacs_study_last_received_at_a2fc2660 ON cloudpacs_study (last_received_at)",
            "CREATE INDEX study_stability ON cloudpacs_study (status, last_received_at)",
        ],
    },
    "after (migration 0015)": {
        "drop": ["cloudpacs_study_last_received_at_a2fc2660", "study_stability"],
        "create": [
            "CREATE INDEX study_receiving ON cloudpacs_study (id) WHERE status = 'receiving'",
            "CREATE INDEX study_facility_arrival ON cloudpacs_study (facility_id, first_received_at DESC, id DESC)",
        ],
    },
}


# The study's part of the statement every instance of a known series sent until migration
# 0017 (since, the sweep folds the counters: bench/scale/archive_counts.py).
STUDY_UPDATE = (
    "UPDATE cloudpacs_study SET number_of_instances = number_of_instances + 1, last_received_at = %s,"
    " status = CASE WHEN status = %s THEN %s ELSE status END WHERE id = %s"
)


def fresh_database(url: str) -> str:
    import psycopg

    name = urlsplit(url).path.lstrip("/")
    admin = url.replace(f"/{name}", "/postgres", 1)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return url


def seed(count: int, townships: int) -> tuple[Any, Any]:
    """`count` studies in SQL; returns (a township, a technologist of it)."""
    from django.db import connection
    from django.utils import timezone

    from facilities.models import ExamKind, Facility, Modality, User

    facilities = [
        Facility.objects.create(
            code=f"T{n:03d}",
            name=f"第{n}镇卫生院",
            short_name=f"T{n}",
            pinyin=f"T{n:03d}",
            kind=Facility.Kind.TOWNSHIP_CENTRE,
            level=1,
        )
        for n in range(townships)
    ]
    modalities = [Modality.objects.create(facility=f, kind=ExamKind.DR, ae_title=f"{f.code}_DR") for f in facilities]
    technologist = User.objects.create(username="bench_tech", role=User.Role.TECHNOLOGIST, facility=facilities[0])
    first_facility, first_modality = facilities[0].pk, modalities[0].pk
    now = timezone.now()
    start = now - timedelta(days=730)
    step = (now - timedelta(hours=1) - start) / count
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO cloudpacs_patient (uuid, patient_id, issuer, name, name_alphabetic, name_ideographic,"
            " name_phonetic, name_initials, birth_date, sex, facility_id)"
            " SELECT gen_random_uuid(), 'P' || n, '', 'Zhang^San', 'Zhang^San', '', '', 'ZS', DATE '1960-01-01',"
            " 'M', %s + n %% %s FROM generate_series(0, %s - 1) n",
            [first_facility, townships, count],
        )
        cursor.execute("SELECT min(id) FROM cloudpacs_patient")
        first_patient = cursor.fetchone()[0]
        # Every 20th study of each township is of a kind the county does not read (no
        # consult: the township keeps it for viewing), spread over the two years.
        cursor.execute(
            "INSERT INTO cloudpacs_study (study_uid, study_date, study_time, accession_number, study_id, description,"
            " referring_physician, modalities_in_study, institution_name, station_name, specific_character_set,"
            " number_of_series, number_of_instances, status, first_received_at, last_received_at, arrived_at,"
            " facility_id, modality_id, patient_id, patient_name_conflict, patient_name_received,"
            " pending_corrections)"
            " SELECT '1.2.826.0.1.3680043.10.9.' || n, (%s + n * %s)::date, TIME '10:00', 'ACC' || n, '1', '',"
            " '', CASE WHEN n / %s %% 20 = 0 THEN 'US' ELSE 'DX' END, '', '', '', 1, 2, 'arrived',"
            " %s + n * %s, %s + n * %s + interval '30 seconds', %s + n * %s + interval '40 seconds',"
            " %s + n %% %s, %s + n %% %s, %s + n, false, 'Zhang^San', 0"
            " FROM generate_series(0, %s - 1) n",
            [
                *(start, step, townships, start, step, start, step, start, step),
                *(first_facility, townships, first_modality, townships, first_patient, count),
            ],
        )
        cursor.execute(
            "INSERT INTO consults_consult (uuid, kind, exam_date, body_parts, body_part_names, priority,"
            " clinical_history, question, status, arrived_at, facility_id, modality_id, study_id, assignment)"
            " SELECT gen_random_uuid(), 'DR', study_date, 1, '', 'routine', '', '', 'signed', arrived_at,"
            " facility_id, modality_id, id, 'pool' FROM cloudpacs_study WHERE modalities_in_study <> 'US'"
        )
        cursor.execute("VACUUM ANALYZE")
    return facilities[0], technologist


def _backend_cpu(cursor: Any) -> float:
    cursor.execute("SELECT pg_backend_pid()")
    fields = Path(f"/proc/{cursor.fetchone()[0]}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _study_updates(cursor: Any) -> tuple[int, int]:
    cursor.execute("SELECT pg_stat_force_next_flush()")
    cursor.execute("SELECT pg_stat_clear_snapshot()")
    cursor.execute("SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'cloudpacs_study'")
    upd, hot = cursor.fetchone()
    return int(upd), int(hot)


def wait_for_usable_indexes(limit: float = 600.0) -> float:
    """Seconds waited until every index of the study table may be planned with. An index
    built over HOT chains whose dead versions some transaction may still see is marked
    indcheckxmin: no query plans with it until every transaction older than it has ended
    (on a shared server, other databases' too). Measured straight away, the queries of
    the first run of this bench walked the table without their new indexes."""
    from django.db import connection

    began = time.monotonic()
    while time.monotonic() - began < limit:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT bool_and(NOT indcheckxmin"
                " OR age(xmin) > age(pg_snapshot_xmin(pg_current_snapshot())::text::xid))"
                " FROM pg_index WHERE indrelid = 'cloudpacs_study'::regclass"
            )
            if cursor.fetchone()[0]:
                break
        time.sleep(1)
    return time.monotonic() - began


def measure_updates(facility: Any, modality_pk: int, patient_pk: int, updates: int) -> tuple[float, int, int]:
    """A new study, then `updates` of its row as the receiver sends them, each committed."""
    from django.db import connection, transaction
    from django.utils import timezone

    from cloudpacs.models import Study

    study = Study.objects.create(
        study_uid=f"1.2.826.0.1.3680043.10.8.{time.time_ns()}",
        patient_id=patient_pk,
        facility=facility,
        modality_id=modality_pk,
        first_received_at=timezone.now(),
        last_received_at=timezone.now(),
    )
    with connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit = off")
        before_upd, before_hot = _study_updates(cursor)
        cpu = _backend_cpu(cursor)
        for _ in range(updates):
            with transaction.atomic():
                cursor.execute(STUDY_UPDATE, [timezone.now(), "arrived", "updated", study.pk])
        cpu = _backend_cpu(cursor) - cpu
        after_upd, after_hot = _study_updates(cursor)
    return cpu * 1000 / updates, after_upd - before_upd, after_hot - before_hot


def before_pending_studies(user: Any, facility: Any) -> list[Any]:
    """The township page's query before migration 0015: by the last image, newest first."""
    from consults.views.pages import PENDING_SCAN
    from facilities.access import studies_for

    queryset = studies_for(user).filter(facility=facility, consult__isnull=True)
    return list(queryset.order_by("-last_received_at", "-id")[:PENDING_SCAN])


def timed(call: Any, runs: int) -> tuple[float, float]:
    samples = []
    for _ in range(runs):
        began = time.perf_counter()
        call()
        samples.append((time.perf_counter() - began) * 1000)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.95))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=1_000_000)
    parser.add_argument("--townships", type=int, default=20)
    parser.add_argument("--updates", type=int, default=4000)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--reuse", action="store_true", help="measure the database seeded by a previous run")
    args = parser.parse_args()
    url = os.environ.get("BENCH_DATABASE_URL", "")
    if not url.startswith("postgres"):
        sys.exit("BENCH_DATABASE_URL must name a PostgreSQL database of its own (it is dropped and created again)")
    os.environ["DATABASE_URL"] = url if args.reuse else fresh_database(url)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cloudpacs.settings")
    sys.path.insert(0, str(ROOT))
    import django
    from django.core.management import call_command

    django.setup()
    from django.db import connection
    from django.utils import timezone

    from cloudpacs import services
    from cloudpacs.models import Patient, Study
    from consults.views.pages import pending_studies
    from facilities.models import Facility, User

    call_command("migrate", verbosity=0)
    began = time.perf_counter()
    if args.reuse:
        facility, technologist = Facility.objects.order_by("pk").first(), User.objects.get(username="bench_tech")
    else:
        facility, technologist = seed(args.studies, args.townships)
        print(f"seeded {args.studies} studies over {args.townships} townships in {time.perf_counter() - began:.0f} s")
    modality_pk = facility.modalities.values_list("pk", flat=True)[0]
    patient_pk = Patient.objects.filter(facility=facility).values_list("pk", flat=True)[0]
    print(f"load average at the start: {os.getloadavg()[0]:.1f}")
    for label, changes in INDEX_SETS.items():
        with connection.cursor() as cursor:
            for name in changes["drop"]:
                cursor.execute(f"DROP INDEX IF EXISTS {name}")
            for sql in changes["create"]:
                cursor.execute(sql.replace("CREATE INDEX", "CREATE INDEX IF NOT EXISTS", 1))
            cursor.execute("ANALYZE cloudpacs_study")
        waited = wait_for_usable_indexes()
        cpu, upd, hot = measure_updates(facility, modality_pk, patient_pk, args.updates)
        # A few studies still receiving, as during a working day.
        Study.objects.filter(pk__in=Study.objects.order_by("-pk").values("pk")[:5]).update(
            status=Study.Status.RECEIVING
        )
        now = timezone.now()
        sweep = timed(lambda now=now: services.has_stable_studies(now, 5.0), args.runs)
        candidates = timed(
            lambda now=now: list(
                Study.objects.filter(status=Study.Status.RECEIVING, last_received_at__lte=now - timedelta(seconds=5))
                .order_by("last_received_at")
                .values_list("pk", flat=True)[:200]
            ),
            args.runs,
        )
        page_query = before_pending_studies if label.startswith("before") else pending_studies
        page = timed(lambda page_query=page_query: page_query(technologist, facility), args.runs)
        shown = len(page_query(technologist, facility))
        Study.objects.filter(status=Study.Status.RECEIVING).update(status=Study.Status.ARRIVED)
        print(f"\n{label} (new indexes usable after {waited:.0f} s)")
        print(f"  study update per instance: {cpu:.3f} ms backend CPU, HOT {hot} of {upd}")
        print(f"  has_stable_studies: p50 {sweep[0]:.2f} ms, p95 {sweep[1]:.2f} ms")
        print(f"  sweep candidates: p50 {candidates[0]:.2f} ms, p95 {candidates[1]:.2f} ms")
        print(f"  township page, studies without a consult ({shown}): p50 {page[0]:.2f} ms, p95 {page[1]:.2f} ms")
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
