#!/usr/bin/env python
"""QIDO-RS beside Orthanc: the same studies in both, the same queries over HTTP on loopback.

Writes N one-instance studies as DICOM files (the names, IDs, dates and modalities of
bench/qido/run.py, with their character set ISO_IR 192), stores them in the platform
through the ingest service (PostgreSQL, a consult for each so a radiologist sees all) and
serves it with gunicorn; then starts Orthanc (apt packages orthanc, orthanc-dicomweb,
orthanc-postgresql) with its index in PostgreSQL, inside a network namespace of its own
(Orthanc binds every address), uploads the same files there, and runs the same queries
against its DICOMweb plugin from inside that namespace. Wildcards go unescaped in the
query string: Orthanc 1.10 takes %2A for a literal asterisk. Prints p50 and p95 (ms) of each
query on both, the rows each answered, and Orthanc's p50 over ours.

    .venv/bin/python bench/qido/orthanc.py --studies 1000 --runs 20
    .venv/bin/python bench/qido/orthanc.py --reuse <work directory printed by that run>

Needs root (unshare -n) and PostgreSQL on its Unix socket in /var/run/postgresql (the
namespace has no route to 127.0.0.1:5432 outside it). The databases yunying_bench_cmp and
yunying_bench_orthanc are dropped and created again.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
OURS_DB = "yunying_bench_cmp"
ORTHANC_DB = "yunying_bench_orthanc"
SOCKET_DIR = "/var/run/postgresql"
ORTHANC = "/usr/sbin/Orthanc"
PLUGINS = "/usr/share/orthanc/plugins"

SURNAMES = [
    ("Zhang", "张"), ("Wang", "王"), ("Li", "李"), ("Zhao", "赵"), ("Liu", "刘"), ("Chen", "陈"), ("Yang", "杨"),
]  # fmt: skip
GIVEN = [("San", "三"), ("Si", "四"), ("Wu", "五"), ("Wei", "伟"), ("Fang", "芳"), ("Min", "敏"), ("Jing", "静")]


def queries(count: int) -> list[tuple[str, dict[str, str]]]:
    """bench/qido/run.py's query kinds, with IDs that exist at `count` studies."""
    some = count // 3
    return [
        ("studies?limit=100", {"limit": "100"}),
        (f"PatientID=P{some:07d}", {"PatientID": f"P{some:07d}"}),
        (f"PatientID=P{some // 10:06d}*", {"PatientID": f"P{some // 10:06d}*"}),
        ("PatientName=张*", {"PatientName": "张*", "limit": "100"}),
        ("PatientName=张^三", {"PatientName": "张^三", "limit": "100"}),
        ("PatientName=zhang*", {"PatientName": "zhang*", "limit": "100"}),
        ("PatientName=欧阳*", {"PatientName": "欧阳*", "limit": "100"}),
        # Orthanc matches a name against its whole value (Zhang^San=张^三), so 张* finds
        # nothing there; this form finds the same studies in both.
        ("PatientName=*张*", {"PatientName": "*张*", "limit": "100"}),
        ("StudyDate=20240301-20240331", {"StudyDate": "20240301-20240331", "limit": "100"}),
        ("StudyDate=20250101-", {"StudyDate": "20250101-", "limit": "100"}),
        (f"AccessionNumber=ACC{some:08d}", {"AccessionNumber": f"ACC{some:08d}"}),
        ("ModalitiesInStudy=DX", {"ModalitiesInStudy": "DX", "limit": "100"}),
        ("ModalitiesInStudy=CT&StudyDate=2024", {"ModalitiesInStudy": "CT", "StudyDate": "20240101-20241231"}),
        ("limit=100&offset=500", {"limit": "100", "offset": str(min(500, count // 2))}),
        ("includefield=all&limit=100", {"includefield": "all", "limit": "100"}),
    ]


def write_files(count: int, directory: Path) -> list[tuple[Path, int, str]]:
    """(file, township number, CT or DX) for each study."""
    from pydicom.uid import DigitalXRayImageStorageForPresentation

    from tests.factories import make_dataset

    rng = random.Random(42)
    start = date(2023, 1, 1)
    files = []
    for n in range(count):
        surname, given = rng.choice(SURNAMES), rng.choice(GIVEN)
        code = "CT" if rng.random() < 0.4 else "DX"
        extra = {} if code == "CT" else {"sop_class_uid": DigitalXRayImageStorageForPresentation}
        ds = make_dataset(
            patient_id=f"P{n:07d}",
            patient_name=f"{surname[0]}^{given[0]}={surname[1]}^{given[1]}",
            character_set="ISO_IR 192",
            modality=code,
            rows=8,
            columns=8,
            study_date=start + timedelta(days=rng.randrange(1095)),
            AccessionNumber=f"ACC{n:08d}",
            StudyDescription="胸部平扫" if code == "DX" else "头颅平扫",
            **extra,
        )
        path = directory / f"{n:07d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append((path, n % 20, code))
    return files


def recreate(name: str) -> None:
    import psycopg

    with psycopg.connect(f"host={SOCKET_DIR} dbname=postgres user=postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(port: int, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"nothing listens on {port}")


def measure(base: str, headers: dict[str, str], count: int, runs: int) -> dict[str, tuple[float, float, int]]:
    import requests

    session = requests.Session()
    session.headers.update({"Accept": "application/dicom+json", **headers})
    results = {}
    for label, params in queries(count):
        times = []
        rows = 0
        for attempt in range(runs + 2):
            began = time.perf_counter()
            response = session.get(f"{base}/studies?{urlencode(params, safe='*^')}", timeout=120)
            elapsed = (time.perf_counter() - began) * 1000
            if response.status_code not in (200, 204):
                raise SystemExit(f"{base} {label}: {response.status_code} {response.text[:200]}")
            rows = len(response.json()) if response.status_code == 200 and response.content else 0
            if attempt >= 2:
                times.append(elapsed)
        times.sort()
        results[label] = (statistics.median(times), times[max(int(len(times) * 0.95) - 1, 0)], rows)
    return results


def django_environment(work: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{OURS_DB}",
            "YUNYING_VAR_DIR": str(work / "var"),
            "STORAGE_ROOT": str(work / "ours"),
            "DJANGO_SETTINGS_MODULE": "cloudpacs.settings",
            "DEBUG": "false",
        }
    )
    os.environ.update(env)
    import django

    django.setup()
    return env


def ours(files: list[tuple[Path, int, str]], env: dict[str, str], runs: int) -> dict[str, tuple[float, float, int]]:
    return serve_and_measure(load_ours(files), env, len(files), runs)


def load_ours(files: list[tuple[Path, int, str]]) -> str:
    """Store the files in a new platform database; return the radiologist's token."""
    recreate(OURS_DB)
    from django.core.management import call_command
    from django.db import connection

    from cloudpacs.services import ingest_instance
    from consults.services import open_consult_for_study
    from facilities.models import ApiToken, ExamKind, Facility, Modality, User

    call_command("migrate", verbosity=0)
    townships = [
        Facility.objects.create(
            code=f"T{n:02d}", name=f"第{n}镇卫生院", short_name=f"T{n}", pinyin=f"T{n:02d}",
            kind=Facility.Kind.TOWNSHIP_CENTRE, level=1,
        )
        for n in range(20)
    ]  # fmt: skip
    modalities = {
        (n, code): Modality.objects.create(facility=t, kind=kind, ae_title=f"{t.code}_{code}")
        for n, t in enumerate(townships)
        for kind, code in ((ExamKind.CT, "CT"), (ExamKind.DR, "DX"))
    }
    began = time.perf_counter()
    from pydicom import dcmread

    for path, township, code in files:
        ds = dcmread(path, stop_before_pixels=True)
        result = ingest_instance(
            path,
            transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
            sop_class_uid=str(ds.SOPClassUID),
            sop_instance_uid=str(ds.SOPInstanceUID),
            modality=modalities[(township, code)],
        )
        open_consult_for_study(result.instance.series.study)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    print(f"platform: stored {len(files)} studies in {time.perf_counter() - began:.0f} s", file=sys.stderr)
    radiologist = User.objects.create(username="bench_dr", role=User.Role.RADIOLOGIST, reads_ct=True, reads_dr=True)
    token = ApiToken.objects.create(radiologist, name="bench")[1]
    connection.close()
    return str(token)


def serve_and_measure(token: str, env: dict[str, str], count: int, runs: int) -> dict[str, tuple[float, float, int]]:
    port = free_port()
    server = subprocess.Popen(
        [
            *(sys.executable, "-m", "gunicorn", "cloudpacs.wsgi:application", "--bind", f"127.0.0.1:{port}"),
            *("--workers", "2", "--threads", "4", "--log-level", "warning"),
        ],
        env=env,
        cwd=ROOT,
    )
    try:
        wait_for(port)
        return measure(f"http://127.0.0.1:{port}/dicomweb", {"Authorization": f"Token {token}"}, count, runs)
    finally:
        server.terminate()
        server.wait(timeout=10)


def orthanc_inside(work: Path, count: int, runs: int, upload: bool = True) -> None:
    """Run in the namespace: start Orthanc, upload the files, measure, print JSON."""
    import requests

    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    config = {
        "Name": "bench",
        "StorageDirectory": str(work / "orthanc-storage"),
        "IndexDirectory": str(work / "orthanc-index"),
        "HttpPort": 8042,
        "DicomPort": 4242,
        "RemoteAccessAllowed": True,
        "AuthenticationEnabled": False,
        "HttpThreadsCount": 50,
        "StableAge": 3600,
        # Its default (Latin-1) would drop the Chinese names from its answers.
        "DefaultEncoding": "Utf8",
        "Plugins": [f"{PLUGINS}/libOrthancDicomWeb.so", f"{PLUGINS}/libOrthancPostgreSQLIndex.so"],
        "PostgreSQL": {
            "EnableIndex": True,
            "EnableStorage": False,
            "Host": SOCKET_DIR,
            "Port": 5432,
            "Database": ORTHANC_DB,
            "Username": "postgres",
            "Password": "",
            "Lock": False,
        },
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    (work / "orthanc.json").write_text(json.dumps(config))
    log = open(work / "orthanc.log", "w")  # noqa: SIM115
    server = subprocess.Popen([ORTHANC, str(work / "orthanc.json")], stdout=log, stderr=log)
    try:
        wait_for(8042)
        session = requests.Session()
        began = time.perf_counter()
        for path in sorted((work / "files").iterdir()) if upload else []:
            response = session.post("http://127.0.0.1:8042/instances", data=path.read_bytes(), timeout=60)
            response.raise_for_status()
        if upload:
            print(f"Orthanc: stored {count} studies in {time.perf_counter() - began:.0f} s", file=sys.stderr)
        results = measure("http://127.0.0.1:8042/dicom-web", {}, count, runs)
        print(json.dumps(results))
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument(
        "--reuse",
        metavar="WORKDIR",
        help="measure again what a previous run stored (its temporary directory and both databases), without loading",
    )
    parser.add_argument("--inside", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        orthanc_inside(Path(args.inside), args.studies, args.runs, upload=not args.reuse)
        return
    if args.reuse:
        work = Path(args.reuse)
        args.studies = len(list((work / "files").iterdir()))
        env = django_environment(work)
    else:
        work = Path(tempfile.mkdtemp(prefix="qido-orthanc-"))
        (work / "files").mkdir()
        print(f"work directory (for --reuse): {work}", file=sys.stderr)
        env = django_environment(work)
        files = write_files(args.studies, work / "files")
        recreate(ORTHANC_DB)
    inside = subprocess.run(
        [
            *("unshare", "-n", sys.executable, __file__, "--inside", str(work)),
            *("--studies", str(args.studies), "--runs", str(args.runs)),
            *(("--reuse", str(work)) if args.reuse else ()),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    sys.stderr.write(inside.stderr)
    theirs = json.loads(inside.stdout.strip().splitlines()[-1])
    if args.reuse:
        # Tokens are kept only as digests: a reused database gets a new one.
        from facilities.models import ApiToken, User

        token = str(ApiToken.objects.create(User.objects.get(username="bench_dr"), name="bench")[1])
        from django.db import connection

        connection.close()
        mine = serve_and_measure(token, env, args.studies, args.runs)
    else:
        mine = ours(files, env, args.runs)
    print(f"\n{args.studies} studies, ours (radiologist token) and Orthanc 1.10 (PostgreSQL index)")
    print(f"ms over HTTP on loopback, {args.runs} runs; ratio = Orthanc p50 / ours")
    print(f"{'query':40}{'ours p50':>9}{'p95':>8}{'rows':>6}{'Orthanc p50':>13}{'p95':>8}{'rows':>6}{'ratio':>8}")
    for label, (p50, p95, rows) in mine.items():
        o50, o95, orows = theirs[label]
        print(f"{label:40}{p50:9.1f}{p95:8.1f}{rows:6d}{o50:13.1f}{o95:8.1f}{orows:6d}{o50 / p50:7.1f}x")


if __name__ == "__main__":
    main()
