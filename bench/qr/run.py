#!/usr/bin/env python
"""DIMSE Query/Retrieve at scale, beside Orthanc: study-level C-FIND at N studies by query
kind, and a C-MOVE of one series, over real sockets on loopback.

Creates a throwaway PostgreSQL database (BENCH_DATABASE_URL; with --orthanc, by default
yunying_bench_qr on the Unix socket), migrates it and seeds N studies with
bench/qido/run.py's seed (one patient, series and consult each, 20 townships, three
years, CT and DX, Chinese and pinyin names). Registers a county workstation (sees the
studies sent for reading: all of them) and a township's (sees its own), and runs the
receiver as the platform does (`manage.py dicomnode`, its own process, on a free port of
127.0.0.1). The SCU is this process (pynetdicom, one association per receiver, Nagle
off): each C-FIND is timed from the request to the final response, every match received.
Then one series of `--instances` CT images (512 x 512, 16 bits) is stored in both and
moved at SERIES level to a pynetdicom storage SCP in this process.

With --orthanc, Orthanc 1.10 (PostgreSQL index, files on disk) gets the same studies:
one small instance per study with the same patient, study and series keys and UIDs,
uploaded through its REST API; each query kind then runs against both, alternately, and
the table gives Orthanc's p50 over ours. Orthanc binds every address, so the whole run
goes into a network namespace of its own (`unshare -n`, as root).

    .venv/bin/python bench/qr/run.py --orthanc --studies 100000 --runs 20 --workdir DIR
    .venv/bin/python bench/qr/run.py --orthanc --reuse --workdir DIR     # measure again

The databases named (yunying_bench_qr, yunying_bench_qr_orthanc) are dropped and
created again unless --reuse: give them names of their own. Prints p50 and p99 in
milliseconds, the matches, and the load average beside each.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
SOCKET_URL = "postgres://postgres@/{name}?host=/var/run/postgresql"
ORTHANC_DATABASE = "yunying_bench_qr_orthanc"


def _load(name: str, path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _qido_bench() -> Any:
    return _load("bench_qido_run", ROOT / "bench" / "qido" / "run.py")


def queries(count: int) -> list[tuple[str, dict[str, str] | None]]:
    """(label, keys): the study-level keys of each query kind, with an ID and an accession
    number that exist at `count` studies (at 100,000: P0012345, P00123*, ACC00054321);
    each query also asks for the usual return keys of a workstation's study list."""
    patient = f"P{int(count * 0.12345):07d}"
    accession = f"ACC{int(count * 0.54321):08d}"
    return [
        (f"PatientID={patient}", {"PatientID": patient}),
        (f"PatientID={patient[:-2]}* (100 patients)", {"PatientID": f"{patient[:-2]}*"}),
        ("PatientName=张三&StudyDate=<one month>", {"PatientName": "张三", "StudyDate": "20240301-20240331"}),
        ("PatientName=zhang*&StudyDate=<one day>", {"PatientName": "zhang*", "StudyDate": "20240301"}),
        ("PatientName=欧阳* (nobody)", {"PatientName": "欧阳*"}),
        ("StudyDate=20240301", {"StudyDate": "20240301"}),
        ("StudyDate=20240301-20240307", {"StudyDate": "20240301-20240307"}),
        (f"AccessionNumber={accession}", {"AccessionNumber": accession}),
        ("ModalitiesInStudy=CT&StudyDate=<one day>", {"ModalitiesInStudy": "CT", "StudyDate": "20240301"}),
        ("StudyInstanceUID=<one>", None),
    ]


RETURN_KEYS = {
    "PatientName": "",
    "PatientID": "",
    "PatientBirthDate": "",
    "PatientSex": "",
    "StudyInstanceUID": "",
    "StudyDate": "",
    "StudyTime": "",
    "AccessionNumber": "",
    "StudyDescription": "",
    "ModalitiesInStudy": "",
    "NumberOfStudyRelatedInstances": "",
}


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def register_entities() -> None:
    from facilities.models import ApplicationEntity, Facility

    county, _ = Facility.objects.get_or_create(
        code="COUNTY",
        defaults={
            "name": "县医院",
            "short_name": "县医院",
            "pinyin": "County",
            "kind": Facility.Kind.COUNTY_HOSPITAL,
            "level": 2,
        },
    )
    township = Facility.objects.get(code="T00")
    ApplicationEntity.objects.get_or_create(
        ae_title="BENCH_COUNTY",
        defaults={"role": "workstation", "facility": county, "may_query": True, "may_retrieve": True},
    )
    ApplicationEntity.objects.get_or_create(
        ae_title="BENCH_TOWN",
        defaults={"role": "workstation", "facility": township, "may_query": True, "may_retrieve": True},
    )


def find_association(address: tuple[str, int], calling: str, called: str) -> Any:
    from pynetdicom import AE
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

    from dicomnode.queryretrieve import OPENED

    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 300
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    # Nagle off on the SCU too (as dcmtk with TCP_NODELAY=1): a C-FIND request is two
    # small messages, and the second would wait for the peer's delayed ACK.
    assoc = ae.associate(*address, ae_title=called, evt_handlers=OPENED)
    assert assoc.is_established, f"{called} refused the benchmark's association"
    return assoc


def time_find(assoc: Any, keys: dict[str, str]) -> tuple[float, int, int]:
    """(ms from the request to the final response, matches, final status)."""
    from pydicom.dataset import Dataset
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.QueryRetrieveLevel = "STUDY"
    for keyword, value in {**RETURN_KEYS, **keys}.items():
        setattr(ds, keyword, value)
    began = time.perf_counter()
    count, final = 0, -1
    for status, _identifier in assoc.send_c_find(ds, StudyRootQueryRetrieveInformationModelFind):
        if status.Status in (0xFF00, 0xFF01):
            count += 1
        else:
            final = int(status.Status)
    return (time.perf_counter() - began) * 1000, count, final


def measure_find(
    targets: dict[str, tuple[tuple[str, int], str]], calling: str, runs: int, one_uid: str, count: int
) -> dict[str, dict[str, tuple[float, float, int, int]]]:
    """{query: {target: (p50, p99, matches, final status)}}; the targets of one query
    kind run alternately, so that both see the same load."""
    associations = {name: find_association(address, calling, called) for name, (address, called) in targets.items()}
    results: dict[str, dict[str, tuple[float, float, int, int]]] = {}
    try:
        for label, keys in queries(count):
            keys = keys if keys is not None else {"StudyInstanceUID": one_uid}
            times: dict[str, list[float]] = {name: [] for name in targets}
            last: dict[str, tuple[int, int]] = {}
            for attempt in range(runs + 2):
                for name, assoc in associations.items():
                    elapsed, count, final = time_find(assoc, keys)
                    if attempt >= 2:
                        times[name].append(elapsed)
                    last[name] = (count, final)
            results[label] = {
                name: (statistics.median(values), percentile(values, 0.99), *last[name])
                for name, values in times.items()
            }
    finally:
        for assoc in associations.values():
            assoc.release()
    return results


def move_series_files(workdir: Path, instances: int) -> tuple[str, str, list[Path]]:
    """The series to move, written once into the work directory (kept for --reuse)."""
    import numpy as np
    from pydicom.uid import generate_uid

    sys.path.insert(0, str(ROOT))
    from tests.factories import make_dataset, write_dataset

    folder = workdir / "move"
    manifest = folder / "series.json"
    if manifest.exists():
        known = json.loads(manifest.read_text())
        if len(known["files"]) == instances:
            return known["study"], known["series"], [Path(f) for f in known["files"]]
    folder.mkdir(parents=True, exist_ok=True)
    study_uid, series_uid = generate_uid(), generate_uid()
    rng = np.random.default_rng(7)
    files = []
    for number in range(1, instances + 1):
        ds = make_dataset(
            study_uid=study_uid,
            series_uid=series_uid,
            patient_id="MOVE0001",
            instance_number=number,
            rows=512,
            columns=512,
        )
        ds.PixelData = rng.integers(0, 4096, size=(512, 512), dtype=np.uint16).tobytes()
        files.append(write_dataset(ds, folder / f"{number:04d}.dcm"))
    manifest.write_text(json.dumps({"study": study_uid, "series": series_uid, "files": [str(f) for f in files]}))
    return study_uid, series_uid, files


def store_series_in_ours(study_uid: str, files: list[Path]) -> None:
    import shutil

    from pydicom import dcmread

    from cloudpacs.models import Study
    from cloudpacs.services import ingest_instance
    from facilities.models import Modality

    if Study.objects.filter(study_uid=study_uid).exists():
        return
    modality = Modality.objects.get(ae_title="T00_CT")
    for path in files:
        # ingest_instance takes the file over: give it a copy.
        copy = path.with_suffix(".ingest")
        shutil.copyfile(path, copy)
        ds = dcmread(path, stop_before_pixels=True)
        ingest_instance(
            copy,
            transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
            sop_class_uid=str(ds.SOPClassUID),
            sop_instance_uid=str(ds.SOPInstanceUID),
            modality=modality,
        )


class Destination:
    """The move destination: a pynetdicom storage SCP on 127.0.0.1 that counts what it
    receives."""

    def __init__(self) -> None:
        from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
        from pynetdicom import AE, evt
        from pynetdicom.sop_class import CTImageStorage

        self.received = 0

        def on_store(event: Any) -> int:
            self.received += 1
            return 0x0000

        ae = AE(ae_title="BENCH_DEST")
        ae.maximum_pdu_size = 0
        ae.add_supported_context(CTImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        self.server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
        self.port = int(self.server.server_address[1])


def time_move(
    address: tuple[str, int], called: str, study_uid: str, series_uid: str, destination: Destination
) -> tuple[float, int, str]:
    """(seconds from the request to the final response, instances received, final status)."""
    from pydicom.dataset import Dataset
    from pynetdicom import AE
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove

    from dicomnode.queryretrieve import OPENED

    ae = AE(ae_title="BENCH_TOWN")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 300
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate(*address, ae_title=called, evt_handlers=OPENED)
    assert assoc.is_established, f"{called} refused the C-MOVE association"
    ds = Dataset()
    ds.QueryRetrieveLevel = "SERIES"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    destination.received = 0
    began = time.perf_counter()
    final = None
    try:
        for status, _ in assoc.send_c_move(ds, "BENCH_DEST", StudyRootQueryRetrieveInformationModelMove):
            final = status
        elapsed = time.perf_counter() - began
    finally:
        assoc.release()
    outcome = "no response" if final is None else f"0x{int(final.Status):04X}"
    return elapsed, destination.received, outcome


def register_destination(port: int) -> None:
    from facilities.models import ApplicationEntity

    township = ApplicationEntity.objects.get(ae_title="BENCH_TOWN").facility
    ApplicationEntity.objects.update_or_create(
        ae_title="BENCH_DEST",
        defaults={
            "role": "workstation",
            "facility": township,
            "host": "127.0.0.1",
            "port": port,
            "is_move_destination": True,
        },
    )


def start_receiver(workdir: Path, env: dict[str, str]) -> tuple[subprocess.Popen, tuple[str, int]]:
    sys.path.insert(0, str(ROOT / "bench" / "qr"))
    from orthanc import free_port, wait_for

    port = free_port()
    log = open(workdir / "receiver.log", "a")  # noqa: SIM115
    process = subprocess.Popen(
        [PYTHON, "manage.py", "dicomnode", "--host", "127.0.0.1", "--port", str(port), "--no-sweep-timer"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=log,
    )
    wait_for(port)
    return process, ("127.0.0.1", port)


def database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def recreate(url: str, name: str) -> None:
    import psycopg

    admin = urlunsplit(urlsplit(url)._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')


def load(value: tuple[float, float, float]) -> str:
    return " / ".join(f"{part:.1f}" for part in value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--instances", type=int, default=200, help="instances in the series moved")
    parser.add_argument("--moves", type=int, default=3, help="C-MOVEs of the series on each side")
    parser.add_argument("--move-only", action="store_true", help="skip the C-FIND measurements")
    parser.add_argument("--orthanc", action="store_true", help="also load and measure Orthanc (root: unshare -n)")
    parser.add_argument("--workdir", type=Path, default=None, help="files kept between runs (default: a new one)")
    parser.add_argument("--reuse", action="store_true", help="measure what a previous run with --workdir loaded")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.workdir is None:
        args.workdir = Path(tempfile.mkdtemp(prefix="bench-qr-"))
        print(f"work directory (for --reuse --workdir): {args.workdir}", flush=True)
    args.workdir = args.workdir.resolve()
    if args.orthanc and not args.inside:
        command = [PYTHON, __file__, "--inside", *sys.argv[1:]]
        if "--workdir" not in sys.argv:
            command += ["--workdir", str(args.workdir)]
        inner = "ip link set lo up && exec " + shlex.join(command)
        sys.exit(subprocess.call(["unshare", "-n", "sh", "-c", inner]))
    workdir: Path = args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    url = os.environ.get("BENCH_DATABASE_URL") or SOCKET_URL.format(name="yunying_bench_qr")
    name = database_name(url)
    if not args.reuse:
        recreate(url, name)
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "STORAGE_ROOT": str(workdir / "storage"),
        "DJANGO_SETTINGS_MODULE": "cloudpacs.settings",
        "DICOM_AE_TITLE": "CLOUDPACS",
        "LOG_LEVEL": "WARNING",
        "DEBUG": "false",
        "CELERY_BROKER_URL": "",
        # The matches of the widest kind (a week: about 650 at 100,000 studies) all answered.
        "DICOM_FIND_MAX_RESULTS": "0",
    }
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "bench" / "qr"))
    import logging

    import django
    from django.core.management import call_command

    django.setup()
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    from pynetdicom import _config

    # The SCU's own cost per match, the same for both receivers: pynetdicom would format
    # every answer for its debug log, on or off (the receiver turns this off too).
    _config.LOG_RESPONSE_IDENTIFIERS = False
    import orthanc as orthanc_bench
    import psycopg
    from django.db import connection

    from cloudpacs.models import Study

    call_command("migrate", verbosity=0)
    began = time.perf_counter()
    if args.reuse:
        print(f"reusing {Study.objects.count()} studies on {connection.vendor}", flush=True)
    else:
        _qido_bench().seed(args.studies)
        print(
            f"seeded {args.studies} studies on {connection.vendor} in {time.perf_counter() - began:.0f} s", flush=True
        )
    register_entities()
    study_uid, series_uid, files = move_series_files(workdir, args.instances)
    store_series_in_ours(study_uid, files)
    destination = Destination()
    register_destination(destination.port)
    seeded = Study.objects.exclude(study_uid=study_uid)
    studies = seeded.count()
    one_uid = seeded.order_by("pk").values_list("study_uid", flat=True)[12345 % max(1, seeded.count())]
    rows = list(
        seeded.order_by("pk").values(
            "study_uid", "study_date", "study_time", "accession_number", "study_id", "description",
            "modalities_in_study", "patient__name", "patient__patient_id", "patient__birth_date", "patient__sex",
            "series__series_uid",
        )
    ) if args.orthanc else []  # fmt: skip
    for row in rows:
        row["series_uid"] = row.pop("series__series_uid")
    connection.close()

    receiver, address = start_receiver(workdir, env)
    targets: dict[str, tuple[tuple[str, int], str]] = {"ours": (address, "CLOUDPACS")}
    theirs = None
    try:
        if args.orthanc:
            if not args.reuse:
                recreate(url, ORTHANC_DATABASE)
                # Loading only: Orthanc commits each instance it stores, and waiting for
                # each commit's flush made the load take hours. Its queries only read.
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute(f'ALTER DATABASE "{ORTHANC_DATABASE}" SET synchronous_commit = off')
            peers = {
                "BENCH_COUNTY": ("127.0.0.1", 1),
                "BENCH_TOWN": ("127.0.0.1", 1),
                "BENCH_DEST": ("127.0.0.1", destination.port),
            }
            theirs = orthanc_bench.Orthanc(workdir, ORTHANC_DATABASE, peers)
            stored = theirs.count_studies()
            if stored < len(rows) + 1:
                print(f"loading Orthanc: {len(rows)} studies, load {load(os.getloadavg())}", flush=True)
                seconds = theirs.upload(orthanc_bench.study_files(rows), len(rows))
                theirs.upload((path.read_bytes() for path in files), len(files))
                print(f"Orthanc: stored {len(rows)} studies in {seconds:.0f} s", flush=True)
            targets["Orthanc"] = (("127.0.0.1", theirs.dicom), orthanc_bench.AE_TITLE)
        if not args.move_only:
            county_targets = targets
            for who, calling, these in (
                ("county workstation (all townships)", "BENCH_COUNTY", county_targets),
                (
                    "township workstation (its own studies; Orthanc has no scope)",
                    "BENCH_TOWN",
                    {"ours": targets["ours"]},
                ),
            ):
                before = os.getloadavg()
                results = measure_find(these, calling, args.runs, one_uid, studies)
                print(
                    f"\n{who}: study-level C-FIND at {studies} studies, ms, {args.runs} runs;"
                    f" load average {load(before)} before, {load(os.getloadavg())} after"
                )
                header = f"{'query':45} {'p50':>8} {'p99':>8} {'matches':>8}"
                if "Orthanc" in these:
                    header += f" {'Orthanc p50':>12} {'p99':>8} {'matches':>8} {'ratio':>7}"
                print(header)
                for label, measured in results.items():
                    p50, p99, matches, final = measured["ours"]
                    line = f"{label:45} {p50:8.1f} {p99:8.1f} {matches:8d}"
                    if final != 0:
                        line += f" (final 0x{final:04X})"
                    if "Orthanc" in measured:
                        o50, o99, omatches, ofinal = measured["Orthanc"]
                        line += f" {o50:12.1f} {o99:8.1f} {omatches:8d} {o50 / p50:6.2f}x"
                        if ofinal != 0:
                            line += f" (Orthanc final 0x{ofinal:04X})"
                    print(line, flush=True)
        print(f"\nC-MOVE of a {args.instances}-instance CT series (512 x 512, 16 bits) to a pynetdicom storage SCP:")
        for attempt in range(args.moves):
            for name, (where, called) in targets.items():
                before = os.getloadavg()
                elapsed, received, outcome = time_move(where, called, study_uid, series_uid, destination)
                print(
                    f"  {name:8} run {attempt + 1}: {received} received in {elapsed:.2f} s,"
                    f" {received / elapsed:.0f} instances/s, final {outcome}; load {load(before)}",
                    flush=True,
                )
    finally:
        receiver.terminate()
        receiver.wait(timeout=60)
        if theirs is not None:
            theirs.stop()
        destination.server.shutdown()


if __name__ == "__main__":
    main()
