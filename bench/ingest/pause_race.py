#!/usr/bin/env python
"""The stalled association of the province replay, reproduced: many pynetdicom clients in
one loaded process, each sending C-STORE after C-STORE on its association.

pynetdicom's pause handshake lets a client's own association loop take the response of
a C-STORE from under its sender when the loop thread was not scheduled between one send
and the next (bench/ingest/harness.console_handlers). The sender then waits its whole
DIMSE timeout, and the receiver, which answered, times the association out.

The receiver here is the bare pynetdicom SCP (bench/ingest/bare_scp.py), so that what is
counted is the client's doing; with `--port` any running receiver (say `manage.py
dicomnode` with the bench's seed) is used instead. Each client runs with pynetdicom's own
pause (`stock`) and with dicomnode.reactor's checked one (`checked`), alternately, and the
script prints, for each: C-STOREs sent, answered, responses the client's loop took
("Received unexpected C-STORE service message") and associations that waited out their
DIMSE timeout.

    .venv/bin/python bench/ingest/pause_race.py [--threads 64] [--stores 50] [--burners 4] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from harness import (
    AE_TITLE,
    BASE_DIR,
    CALLING,
    PYTHON,
    TakenResponses,
    console_handlers,
    free_port,
    stop,
    wait_for_port,
)


def dataset():  # type: ignore[no-untyped-def]
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = "RACE"
    ds.Modality = "CT"
    ds.Rows = ds.Columns = 16
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation, ds.SamplesPerPixel = 0, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = bytes(16 * 16 * 2)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def round_of(port: int, threads: int, stores: int, checked: bool, timeout: float) -> Counter[str]:
    from pydicom.uid import generate_uid
    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

    counts: Counter[str] = Counter()
    lock = threading.Lock()

    def client() -> None:
        template = dataset()
        ae = AE(ae_title=CALLING)
        ae.add_requested_context(CTImageStorage, "1.2.840.10008.1.2.1")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
        handlers = console_handlers() if checked else []
        assoc = ae.associate("127.0.0.1", port, ae_title=AE_TITLE, evt_handlers=handlers)
        local: Counter[str] = Counter()
        if not assoc.is_established:
            local["not established"] += 1
        else:
            try:
                for _ in range(stores):
                    if not assoc.is_established:
                        local["associations ended early"] += 1
                        break
                    template.SOPInstanceUID = generate_uid()
                    local["sent"] += 1
                    status = assoc.send_c_store(template)
                    if getattr(status, "Status", None) == 0:
                        local["answered"] += 1
                    else:
                        local["timed out (DIMSE)"] += 1
            finally:
                if assoc.is_established:
                    assoc.release()
        with lock:
            counts.update(local)

    workers = [threading.Thread(target=client) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return counts


def burn(stop_event: threading.Event) -> None:
    """Python work on other threads of the client process: its loop threads wait for
    the interpreter lock, as 128 console threads made them wait in the replay."""
    while not stop_event.is_set():
        sum(i * i for i in range(2000))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=64, help="clients at once (one association each)")
    parser.add_argument("--stores", type=int, default=50, help="C-STOREs per association")
    parser.add_argument("--burners", type=int, default=4, help="threads of Python work in the client process")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of each kind, alternately")
    parser.add_argument("--timeout", type=float, default=10.0, help="the clients' DIMSE timeout, seconds")
    parser.add_argument("--port", type=int, default=None, help="a running receiver instead of the bare SCP")
    args = parser.parse_args()

    unexpected = TakenResponses.install()
    server = None
    port = args.port
    if port is None:
        port = free_port()
        out = Path(tempfile.mkdtemp(prefix="pause-race-"))
        scp = str(BASE_DIR / "bench" / "ingest" / "bare_scp.py")
        server = subprocess.Popen(
            [PYTHON, scp, "--port", str(port), "--out", str(out), "--aet", AE_TITLE],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(port, server)
    stop_burning = threading.Event()
    burners = [threading.Thread(target=burn, args=(stop_burning,), daemon=True) for _ in range(args.burners)]
    for burner in burners:
        burner.start()
    print(f"load average at the start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    totals = {"stock": Counter(), "checked": Counter()}
    try:
        for _ in range(args.rounds):
            for kind in ("stock", "checked"):
                before = unexpected.count
                started = time.monotonic()
                counts = round_of(port, args.threads, args.stores, kind == "checked", args.timeout)
                counts["responses taken by the client's loop"] = unexpected.count - before
                totals[kind].update(counts)
                print(f"{kind:8s} {time.monotonic() - started:6.1f} s {dict(counts)}", flush=True)
    finally:
        stop_burning.set()
        if server is not None:
            stop(server)
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    for kind, counts in totals.items():
        taken = counts["responses taken by the client's loop"]
        print(
            f"{kind}: {counts['sent']} sent, {counts['answered']} answered, {taken} taken by the client's loop,"
            f" {counts['timed out (DIMSE)']} waited out the DIMSE timeout"
        )
    sys.exit(0)


if __name__ == "__main__":
    main()
