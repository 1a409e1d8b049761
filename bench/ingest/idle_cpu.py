#!/usr/bin/env python
"""What an idle receiver costs: CPU seconds and voluntary context switches (wake-ups) of
the receiver's process tree (`manage.py dicomnode` on PostgreSQL, as run.py's
yunying-postgresql) over `--seconds` with no association, then over `--seconds` with one
association open and idle (a pynetdicom client in this process, which is not counted).

pynetdicom's loops poll: each thread of an association sleeps 1 ms whenever it has
nothing to do, a thousand wake-ups a second. dicomnode.reactor's wait on their socket or
an event and wake IDLE_WAIT apart (20 a second) for the timers. With no association,
nothing of either runs; what remains is the accept loop and the stability sweep.

`--before-repo` also runs another checkout's receiver (the code before a change), the two
alternated `--runs` times, so that the machine's load falls on both alike:

    .venv/bin/python bench/ingest/idle_cpu.py --seconds 30 --runs 2 --before-repo <checkout>
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from harness import AE_TITLE, BASE_DIR, CALLING, PG_SOCKET_DIR, free_port, wait_for_port
from run import settle, start_yunying_pg, stop, thread_switches, tree_cpu_split


def window(pid: int, seconds: float) -> tuple[float, int]:
    """CPU seconds and voluntary switches of the tree's threads over `seconds` (threads
    alive at both ends: an idle receiver starts and ends none)."""
    cpu_before, switches_before = sum(tree_cpu_split(pid)), thread_switches(pid)
    time.sleep(seconds)
    cpu_after, switches_after = sum(tree_cpu_split(pid)), thread_switches(pid)
    switches = sum(count - switches_before[tid] for tid, count in switches_after.items() if tid in switches_before)
    return cpu_after - cpu_before, switches


def measure(name: str, repo: Path, workdir: Path, seconds: float) -> None:
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    rundir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=workdir))
    port = free_port()
    process = start_yunying_pg(workdir, 1, repo)(rundir, port)
    ae = AE(ae_title=CALLING)
    ae.add_requested_context(Verification)
    try:
        wait_for_port(port, process)
        # One association first: code loaded, the index's connection open.
        assoc = ae.associate("127.0.0.1", port, ae_title=AE_TITLE)
        assert assoc.is_established and assoc.send_c_echo().Status == 0x0000
        assoc.release()
        settle(process.pid)
        cpu, switches = window(process.pid, seconds)
        print(
            f"{name:8s} no association:  CPU {cpu * 1000:7.0f} ms over {seconds:.0f} s,"
            f" {switches / seconds:7.1f} wake-ups/s, load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        assoc = ae.associate("127.0.0.1", port, ae_title=AE_TITLE)
        assert assoc.is_established
        try:
            time.sleep(1)
            cpu, switches = window(process.pid, seconds)
        finally:
            assoc.release()
        print(
            f"{name:8s} one idle association: CPU {cpu * 1000:7.0f} ms over {seconds:.0f} s,"
            f" {switches / seconds:7.1f} wake-ups/s, load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
    finally:
        stop(process)
        shutil.rmtree(rundir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--before-repo", type=Path, default=None, help="also run this checkout's receiver")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "yunying-bench-idle")
    args = parser.parse_args()
    if not Path(PG_SOCKET_DIR, ".s.PGSQL.5432").exists():
        sys.exit("no PostgreSQL at " + PG_SOCKET_DIR)
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(f"load average at the start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    receivers = [("this", BASE_DIR)] + ([("before", args.before_repo)] if args.before_repo else [])
    for _ in range(args.runs):
        for name, repo in receivers:
            measure(name, repo, args.workdir, args.seconds)
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
