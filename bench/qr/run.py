#!/usr/bin/env python
"""DIMSE Query/Retrieve at scale: study-level C-FIND at N studies by query kind, and a
C-MOVE of one series, over real sockets on loopback.

Creates a throwaway database (PostgreSQL when BENCH_DATABASE_URL names a server, else a
SQLite file in a temporary directory), migrates it and seeds N studies with
bench/qido/run.py's seed (one patient, series and consult each, 20 townships, three
years, CT and DX, Chinese and pinyin names). Registers a county workstation (sees the
studies sent for reading: all of them) and a township's (sees its own), starts the
receiver on a free port of 127.0.0.1 in this process, and times each C-FIND from a
pynetdicom SCU on one association: from the request to the final response, every match
received. Then stores one series of `--instances` CT images (512 x 512, 16 bits) through
the ingest service and times a C-MOVE of it to a pynetdicom storage SCP on 127.0.0.1.

    BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/yunying_bench_qr \\
        .venv/bin/python bench/qr/run.py --studies 100000 --runs 30

The database named there is dropped and created again: give it a name of its own. Prints
p50 and p99 in milliseconds, the matches each query returned, and the load average.
Orthanc is not run here: no Orthanc package is available on the development machines
(see docs/benchmarks-qr.md).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _qido_bench() -> object:
    spec = importlib.util.spec_from_file_location("bench_qido_run", ROOT / "bench" / "qido" / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# (label, keys): the study-level keys of each query kind; each query also asks for the
# usual return keys of a workstation's study list.
QUERIES: list[tuple[str, dict[str, str] | None]] = [
    ("PatientID=P0012345", {"PatientID": "P0012345"}),
    ("PatientID=P00123*", {"PatientID": "P00123*"}),
    ("PatientName=张三&StudyDate=<one month>", {"PatientName": "张三", "StudyDate": "20240301-20240331"}),
    ("PatientName=zhang*&StudyDate=<one day>", {"PatientName": "zhang*", "StudyDate": "20240301"}),
    ("PatientName=欧阳* (nobody)", {"PatientName": "欧阳*"}),
    ("StudyDate=20240301", {"StudyDate": "20240301"}),
    ("StudyDate=20240301-20240307", {"StudyDate": "20240301-20240307"}),
    ("AccessionNumber=ACC00054321", {"AccessionNumber": "ACC00054321"}),
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


def measure_find(address: tuple[str, int], calling: str, runs: int) -> list[tuple[str, float, float, int]]:
    from pydicom.dataset import Dataset
    from pynetdicom import AE
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

    from cloudpacs.models import Study

    one_uid = Study.objects.order_by("pk").values_list("study_uid", flat=True)[12345 % max(1, Study.objects.count())]
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 120
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    from dicomnode.queryretrieve import OPENED

    # Nagle off on the SCU too (as dcmtk with TCP_NODELAY=1): a C-FIND request is two
    # small messages, and the second would wait for the receiver's delayed ACK.
    assoc = ae.associate(*address, ae_title="CLOUDPACS", evt_handlers=OPENED)
    assert assoc.is_established, "the receiver refused the benchmark's association"
    results = []
    try:
        for label, keys in QUERIES:
            keys = keys if keys is not None else {"StudyInstanceUID": one_uid}
            times = []
            matches = 0
            for attempt in range(runs + 2):
                ds = Dataset()
                ds.SpecificCharacterSet = "ISO_IR 192"
                ds.QueryRetrieveLevel = "STUDY"
                for keyword, value in {**RETURN_KEYS, **keys}.items():
                    setattr(ds, keyword, value)
                began = time.perf_counter()
                count = 0
                for status, _identifier in assoc.send_c_find(ds, StudyRootQueryRetrieveInformationModelFind):
                    if status.Status in (0xFF00, 0xFF01):
                        count += 1
                    else:
                        assert status.Status == 0x0000, (label, hex(status.Status))
                elapsed = (time.perf_counter() - began) * 1000
                if attempt >= 2:
                    times.append(elapsed)
                matches = count
            results.append((label, statistics.median(times), percentile(times, 0.99), matches))
    finally:
        assoc.release()
    return results


def measure_move(address: tuple[str, int], instances: int, workdir: Path) -> tuple[float, int]:
    import numpy as np
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import CTImageStorage, StudyRootQueryRetrieveInformationModelMove

    from cloudpacs.services import ingest_instance
    from facilities.models import ApplicationEntity, Modality

    sys.path.insert(0, str(ROOT))
    from tests.factories import make_dataset, write_dataset

    modality = Modality.objects.get(ae_title="T00_CT")
    study_uid, series_uid = generate_uid(), generate_uid()
    incoming = workdir / "incoming"
    incoming.mkdir()
    rng = np.random.default_rng(7)
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
        path = write_dataset(ds, incoming / f"{number}.dcm")
        ingest_instance(
            path,
            transfer_syntax_uid=ExplicitVRLittleEndian,
            sop_class_uid=CTImageStorage,
            sop_instance_uid=str(ds.SOPInstanceUID),
            modality=modality,
        )
    received = 0

    def on_store(event: evt.Event) -> int:
        nonlocal received
        received += 1
        return 0x0000

    destination = AE(ae_title="BENCH_DEST")
    destination.maximum_pdu_size = 0
    destination.add_supported_context(CTImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    server = destination.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    township = ApplicationEntity.objects.get(ae_title="BENCH_TOWN").facility
    ApplicationEntity.objects.update_or_create(
        ae_title="BENCH_DEST",
        defaults={
            "role": "workstation",
            "facility": township,
            "host": "127.0.0.1",
            "port": server.server_address[1],
            "is_move_destination": True,
        },
    )
    try:
        ae = AE(ae_title="BENCH_TOWN")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 300
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
        from pydicom.dataset import Dataset

        from dicomnode.queryretrieve import OPENED

        assoc = ae.associate(*address, ae_title="CLOUDPACS", evt_handlers=OPENED)
        assert assoc.is_established

        ds = Dataset()
        ds.QueryRetrieveLevel = "SERIES"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        began = time.perf_counter()
        final = None
        for status, _ in assoc.send_c_move(ds, "BENCH_DEST", StudyRootQueryRetrieveInformationModelMove):
            final = status
        elapsed = time.perf_counter() - began
        assoc.release()
        assert final is not None, "no C-MOVE response"
        if final.Status != 0x0000:
            print(f"C-MOVE ended with 0x{final.Status:04X}: {final.NumberOfFailedSuboperations} sub-operations failed")
    finally:
        server.shutdown()
    return elapsed, received


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--instances", type=int, default=200, help="instances in the series moved")
    parser.add_argument("--move-only", action="store_true", help="skip the C-FIND measurements")
    parser.add_argument("--reuse", action="store_true", help="measure the PostgreSQL database seeded by a previous run")
    args = parser.parse_args()
    qido_bench = _qido_bench()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        url = os.environ.get("BENCH_DATABASE_URL")
        reuse = bool(args.reuse and url)
        os.environ["DATABASE_URL"] = url if reuse else qido_bench.fresh_database(url, workdir)  # type: ignore[attr-defined]
        os.environ["STORAGE_ROOT"] = str(workdir / "storage")
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cloudpacs.settings")
        sys.path.insert(0, str(ROOT))
        import logging

        import django
        from django.core.management import call_command

        django.setup()
        logging.getLogger("dicomnode").setLevel(logging.WARNING)
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)
        from django.conf import settings
        from django.db import connection

        from dicomnode import server as dicomnode

        settings.DICOM_AE_TITLE = "CLOUDPACS"
        call_command("migrate", verbosity=0)
        began = time.perf_counter()
        if reuse:
            from cloudpacs.models import Study

            print(f"reusing {Study.objects.count()} studies on {connection.vendor}")
        else:
            qido_bench.seed(args.studies)  # type: ignore[attr-defined]
            print(f"seeded {args.studies} studies on {connection.vendor} in {time.perf_counter() - began:.0f} s")
        register_entities()
        connection.close()
        receiver = dicomnode.start_server("127.0.0.1", 0, block=False)
        address = ("127.0.0.1", receiver.server_address[1])
        try:
            for who, calling in (
                []
                if args.move_only
                else (
                    ("county workstation (all townships)", "BENCH_COUNTY"),
                    ("township workstation", "BENCH_TOWN"),
                )
            ):
                print(f"\n{who}: study-level C-FIND, ms, {args.runs} runs; load average {os.getloadavg()}")
                print(f"{'query':45} {'p50':>8} {'p99':>8} {'matches':>8}")
                for label, p50, p99, matches in measure_find(address, calling, args.runs):
                    print(f"{label:45} {p50:8.1f} {p99:8.1f} {matches:8d}")
            elapsed, received = measure_move(address, args.instances, workdir)
            print(
                f"\nC-MOVE of a {args.instances}-instance CT series (512 x 512, 16 bits) to a pynetdicom storage SCP on"
                f" 127.0.0.1: {received} received in {elapsed:.2f} s, {received / elapsed:.0f} instances/s;"
                f" load average {os.getloadavg()}"
            )
        finally:
            receiver.shutdown()


if __name__ == "__main__":
    main()
