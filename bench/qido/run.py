#!/usr/bin/env python
"""QIDO-RS latency at scale: each query kind of the DICOMweb search, at N studies.

Creates a throwaway database (PostgreSQL when BENCH_DATABASE_URL names a server, else a
SQLite file in a temporary directory), migrates it, bulk-inserts N studies (one patient,
one series and one consult each, over 20 townships, three years, CT and DX, Chinese and
pinyin names), then times each query through the full Django stack (token
authentication, the view, the SQL, the DICOM JSON) in process, as a radiologist (all
townships) and as a technologist (one township). Prints p50 and p95 in milliseconds.

    BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/yunying_bench_qido \\
        .venv/bin/python bench/qido/run.py --studies 100000 --runs 30

The database named there is dropped and created again: give it a name of its own.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[2]

SURNAMES = [
    ("Zhang", "张"),
    ("Wang", "王"),
    ("Li", "李"),
    ("Zhao", "赵"),
    ("Liu", "刘"),
    ("Chen", "陈"),
    ("Yang", "杨"),
]
GIVEN = [("San", "三"), ("Si", "四"), ("Wu", "五"), ("Wei", "伟"), ("Fang", "芳"), ("Min", "敏"), ("Jing", "静")]


def fresh_database(url: str | None, workdir: Path) -> str:
    if not url:
        return f"sqlite:///{workdir / 'bench.sqlite3'}"
    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = url.replace(f"/{name}", "/postgres", 1)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return url


def seed(count: int) -> tuple[str, str]:
    """Insert `count` studies; return (radiologist token, technologist token)."""
    from django.utils import timezone
    from pydicom.uid import generate_uid

    from cloudpacs.models import Patient, Series, Study
    from consults.models import Consult
    from facilities.models import ApiToken, ExamKind, Facility, Modality, User

    rng = random.Random(42)
    townships = [
        Facility.objects.create(
            code=f"T{n:02d}",
            name=f"第{n}镇卫生院",
            short_name=f"T{n}",
            pinyin=f"T{n:02d}",
            kind=Facility.Kind.TOWNSHIP_CENTRE,
            level=1,
        )
        for n in range(20)
    ]
    modalities = {
        (t.pk, kind): Modality.objects.create(facility=t, kind=kind, ae_title=f"{t.code}_{kind}")
        for t in townships
        for kind in (ExamKind.CT, ExamKind.DR)
    }
    radiologist = User.objects.create(username="bench_dr", role=User.Role.RADIOLOGIST, reads_ct=True, reads_dr=True)
    technologist = User.objects.create(username="bench_tech", role=User.Role.TECHNOLOGIST, facility=townships[0])
    start = date(2023, 1, 1)
    now = timezone.now()
    batch = 5000
    for offset in range(0, count, batch):
        size = min(batch, count - offset)
        patients, studies, series, consults = [], [], [], []
        for n in range(offset, offset + size):
            township = townships[n % len(townships)]
            surname, given = rng.choice(SURNAMES), rng.choice(GIVEN)
            patients.append(
                Patient(
                    facility=township,
                    patient_id=f"P{n:07d}",
                    name=f"{surname[0]}^{given[0]}={surname[1]}^{given[1]}",
                    name_alphabetic=f"{surname[0]}^{given[0]}",
                    name_ideographic=f"{surname[1]}^{given[1]}",
                    birth_date=date(1950, 1, 1) + timedelta(days=rng.randrange(20000)),
                    sex=rng.choice("MF"),
                )
            )
        Patient.objects.bulk_create(patients)
        if patients[0].pk is None:  # SQLite before returning ids
            patients = list(Patient.objects.filter(patient_id__in=[p.patient_id for p in patients]).order_by("pk"))
        for n, patient in zip(range(offset, offset + size), patients, strict=True):
            kind = ExamKind.CT if rng.random() < 0.4 else ExamKind.DR
            code = "CT" if kind == ExamKind.CT else "DX"
            studies.append(
                Study(
                    study_uid=generate_uid(),
                    patient=patient,
                    facility_id=patient.facility_id,
                    modality=modalities[(patient.facility_id, kind)],
                    study_date=start + timedelta(days=rng.randrange(1095)),
                    accession_number=f"ACC{n:08d}",
                    study_id="1",
                    description="胸部平扫" if code == "DX" else "头颅平扫",
                    modalities_in_study=code,
                    number_of_series=1,
                    number_of_instances=1,
                    status=Study.Status.ARRIVED,
                    last_received_at=now,
                )
            )
        Study.objects.bulk_create(studies)
        for study in studies:
            code = study.modalities_in_study
            series.append(
                Series(series_uid=generate_uid(), study=study, modality=code, series_number=1, number_of_instances=1)
            )
            consults.append(
                Consult(
                    study=study,
                    facility_id=study.facility_id,
                    modality=study.modality,
                    kind=ExamKind.CT if code == "CT" else ExamKind.DR,
                    exam_date=study.study_date,
                    arrived_at=now,
                )
            )
        Series.objects.bulk_create(series)
        Consult.objects.bulk_create(consults)
        print(f"  seeded {offset + size} studies", file=sys.stderr)
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
    return ApiToken.objects.create(radiologist, name="bench")[1], ApiToken.objects.create(technologist, name="bench")[1]


QUERIES = [
    ("studies?limit=100", {"limit": "100"}),
    ("PatientID=P0012345", {"PatientID": "P0012345"}),
    ("PatientID=P00123*", {"PatientID": "P00123*"}),
    ("PatientName=张*", {"PatientName": "张*", "limit": "100"}),
    ("PatientName=张三", {"PatientName": "张三", "limit": "100"}),
    ("PatientName=zhang*", {"PatientName": "zhang*", "limit": "100"}),
    # A name nobody has: without an index on the names, every patient is looked at.
    ("PatientName=欧阳*", {"PatientName": "欧阳*", "limit": "100"}),
    ("StudyDate=20240301", {"StudyDate": "20240301"}),
    ("StudyDate=20240301-20240331", {"StudyDate": "20240301-20240331", "limit": "100"}),
    ("StudyDate=20250101-", {"StudyDate": "20250101-", "limit": "100"}),
    ("AccessionNumber=ACC00054321", {"AccessionNumber": "ACC00054321"}),
    ("ModalitiesInStudy=DX", {"ModalitiesInStudy": "DX", "limit": "100"}),
    (
        "ModalitiesInStudy=CT&StudyDate=2024",
        {"ModalitiesInStudy": "CT", "StudyDate": "20240101-20241231", "limit": "100"},
    ),
    ("StudyInstanceUID=<one>", None),
    ("limit=100&offset=5000", {"limit": "100", "offset": "5000"}),
    ("includefield=all&limit=100", {"includefield": "all", "limit": "100"}),
]


def measure(token: str, runs: int) -> list[tuple[str, float, float, int]]:
    from django.test import Client

    from cloudpacs.models import Study

    client = Client(HTTP_AUTHORIZATION=f"Token {token}")
    one_uid = Study.objects.order_by("pk").values_list("study_uid", flat=True)[len(QUERIES)]
    results = []
    for label, params in QUERIES:
        params = params if params is not None else {"StudyInstanceUID": one_uid}
        times = []
        rows = 0
        for attempt in range(runs + 2):
            began = time.perf_counter()
            response = client.get("/dicomweb/studies", params)
            elapsed = (time.perf_counter() - began) * 1000
            assert response.status_code in (200, 204), (label, response.status_code)
            if attempt >= 2:
                times.append(elapsed)
            rows = len(response.json()) if response.status_code == 200 else 0
        times.sort()
        results.append((label, statistics.median(times), times[int(len(times) * 0.95) - 1], rows))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--reuse", action="store_true", help="measure the PostgreSQL database seeded by a previous run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = os.environ.get("BENCH_DATABASE_URL")
        os.environ["DATABASE_URL"] = url if (args.reuse and url) else fresh_database(url, Path(tmp))
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cloudpacs.settings")
        sys.path.insert(0, str(ROOT))
        import django
        from django.core.management import call_command

        django.setup()
        from django.conf import settings
        from django.db import connection

        from cloudpacs.models import Study

        settings.ALLOWED_HOSTS = ["testserver"]
        call_command("migrate", verbosity=0)
        began = time.perf_counter()
        if args.reuse and url:
            # Tokens are kept only as digests: a reused database gets new ones.
            from facilities.models import ApiToken, User

            reader = ApiToken.objects.create(User.objects.get(username="bench_dr"), name="bench")[1]
            tech = ApiToken.objects.create(User.objects.get(username="bench_tech"), name="bench")[1]
            print(f"reusing {Study.objects.count()} studies on {connection.vendor}")
        else:
            reader, tech = seed(args.studies)
            print(f"seeded {args.studies} studies on {connection.vendor} in {time.perf_counter() - began:.0f} s")
        for who, token in (("radiologist (all townships)", reader), ("technologist (one township)", tech)):
            print(f"\n{who}: ms, {args.runs} runs")
            print(f"{'query':45} {'p50':>8} {'p95':>8} {'rows':>6}")
            for label, p50, p95, rows in measure(token, args.runs):
                print(f"{label:45} {p50:8.1f} {p95:8.1f} {rows:6d}")


if __name__ == "__main__":
    main()
