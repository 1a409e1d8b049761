"""The ingest benchmarks' accounting: the rate at the server's side of the wire
(bench/ingest/wire.py) and every process's CPU during a push (bench/ingest/accounting.py)."""

from __future__ import annotations

import importlib
import math
import os
import socket
import struct
import sys
import threading
from pathlib import Path

import pytest

from bench.ingest import accounting, wire

INGEST = Path(__file__).resolve().parents[1] / "bench" / "ingest"


def frame(source: int, destination: int, payload: bytes) -> bytes:
    """An Ethernet frame of the loopback device: IPv4, TCP without options."""
    tcp = struct.pack("!HHIIBBHHH", source, destination, 0, 0, 5 << 4, 0x18, 65535, 0, 0)
    loopback = b"\x7f\0\0\1"
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp) + len(payload), 0, 0x4000, 64, 6, 0, loopback, loopback)
    return b"\0" * 12 + b"\x08\x00" + ip + tcp + payload


def test_the_tap_tells_a_request_from_an_answer_by_the_pdu_type():
    assert wire.parse(frame(40000, 11112, b"\x01\x00\x00\x00\x10\x00"), 11112) == ("request", 40000, 1)
    assert wire.parse(frame(11112, 40000, b"\x04\x00\x00\x00\x00\x20"), 11112) == ("answer", 40000, 4)
    assert wire.parse(frame(11112, 40000, b"\x02\x00\x00\x00\x00\x20"), 11112) == ("other", 40000, 2)
    assert wire.parse(frame(40000, 5432, b"\x01\x00"), 11112) is None
    assert wire.parse(frame(40000, 11112, b""), 11112) is None


def test_the_window_runs_from_the_first_request_to_the_last_answer():
    tap = wire.WireTap(11112)
    tap.note("answer", 40001, 0.5)  # an answer on a connection whose request was not seen
    tap.note("request", 40001, 10.0)
    tap.note("request", 40002, 10.25)
    tap.note("answer", 40001, 10.5)
    tap.note("request", 40001, 10.6)  # a dataset's piece that starts with 01 00
    tap.note("answer", 40002, 11.0)
    tap.note("answer", 40001, 10.75)
    assert tap.wire.seconds == pytest.approx(1.0)
    assert tap.wire.spread == pytest.approx(0.25)
    assert tap.wire.rate(100) == pytest.approx(100.0)
    assert tap.wire.answers == 3
    # Both open from 10.25 to 10.75: two answers in half a second.
    assert tap.wire.steady_rate() == pytest.approx(4.0)


def test_a_push_the_tap_did_not_see_has_no_wire_rate():
    empty = wire.Wire()
    assert math.isnan(empty.seconds) and math.isnan(empty.spread) and math.isnan(empty.rate(10))
    assert math.isnan(empty.steady_rate())
    one_after_another = wire.Wire({1: 0.0, 2: 2.0}, {1: 1.0, 2: 3.0}, 2, [1.0, 3.0])
    assert math.isnan(one_after_another.steady_rate())


def test_the_kernel_filter_jumps_stay_inside_the_program():
    program = wire._filter(11112)
    assert program[-2] == (0x06, 0, 0, wire.SNAP) and program[-1] == (0x06, 0, 0, 0)
    for at, (code, jt, jf, _) in enumerate(program):
        if code & 0x07 == 0x05:
            assert at + 1 + max(jt, jf) < len(program)


def test_the_tap_reads_a_request_and_the_answers_on_loopback():
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0).close()
    except (OSError, AttributeError):
        pytest.skip("no packet socket here (needs root or CAP_NET_RAW)")
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def answer() -> None:
        connection, _ = server.accept()
        with connection:
            connection.recv(6)
            connection.sendall(b"\x02\x00\x00\x00\x00\x00")  # an A-ASSOCIATE-AC
            for _ in range(3):
                connection.recv(6)
                connection.sendall(b"\x04\x00\x00\x00\x00\x00")  # a C-STORE answer
            connection.recv(6)

    thread = threading.Thread(target=answer)
    thread.start()
    with wire.WireTap(port) as tap:
        with socket.create_connection(("127.0.0.1", port)) as client:
            client.sendall(b"\x01\x00\x00\x00\x00\x00")
            client.recv(6)
            for _ in range(3):
                client.sendall(b"\x01\x00\x04\x00\x00\x00")  # data that starts as a request would
                client.recv(6)
            client.sendall(b"\x05\x00\x00\x00\x00\x00")
        thread.join()
    server.close()
    assert tap.error is None
    assert tap.wire.answers == 3
    assert list(tap.wire.requests) == list(tap.wire.last_answers)
    assert tap.wire.seconds > 0


def test_kernel_threads_are_grouped_by_their_name_prefix():
    assert accounting.kernel_group("kworker/1:1H-kblockd") == "kernel kworker"
    assert accounting.kernel_group("jbd2/vda1-8") == "kernel jbd2"
    assert accounting.kernel_group("ksoftirqd/0") == "kernel ksoftirqd"
    assert accounting.kernel_group("rcu_preempt") == "kernel rcu"
    assert accounting.kernel_group("kswapd0") == "kernel other"


def test_the_groups_leave_the_named_processes_out_and_count_new_threads_from_zero():
    kernel = accounting.Process("jbd2/vda1-8", 2, True, False)
    bench = accounting.Process("python", 1, False, False)
    probe = accounting.Process("python", 100, False, False)
    receiver = accounting.Process("python", 100, False, False)
    wal = accounting.Process("postgres", 1, False, True)
    other = accounting.Process("node", 1, False, False)
    processes = {10: kernel, 100: bench, 101: probe, 102: receiver, 200: wal, 300: other}
    before = accounting.Snapshot(
        processes,
        {10: (10, 1_000_000), 100: (100, 0), 101: (101, 0), 102: (102, 0), 200: (200, 0), 300: (300, 0), 301: (300, 0)},
        cost_ns=2_000_000,
    )
    after = accounting.Snapshot(
        processes,
        {
            10: (10, 3_000_000),
            100: (100, 5_000_000),
            101: (101, 1_000_000),
            102: (102, 9_000_000),
            200: (200, 500_000),
            300: (300, 4_000_000),
            302: (300, 1_000_000),  # started between the two: all of it counts
        },
        cost_ns=2_000_000,
    )
    totals, rest = accounting.groups(before, after, named=[102], bench_root=100)
    assert totals["kernel jbd2"] == pytest.approx(2.0)
    assert totals["bench"] == pytest.approx(3.0)  # 5 ms, less the snapshots' halves
    assert totals["bench accounting"] == pytest.approx(2.0)
    assert totals["bench children"] == pytest.approx(1.0)
    assert totals["postgres other"] == pytest.approx(0.5)
    assert totals["rest"] == pytest.approx(5.0) and rest == {"node": pytest.approx(5.0)}
    assert set(totals) == set(accounting.GROUPS)


def test_a_process_that_ended_is_counted_from_its_parents_children_ticks():
    shell = accounting.Process("bash", 1, False, False, children_ticks=100)
    # A job whose threads that ended before the window are in its own ticks only, and
    # whose child ends with it.
    job = accounting.Process("pytest", 400, False, False, children_ticks=1, own_ticks=3)
    worker = accounting.Process("python", 401, False, False, own_ticks=2)
    before = accounting.Snapshot(
        {400: shell, 401: job, 402: worker}, {400: (400, 0), 401: (401, 10_000_000), 402: (402, 20_000_000)}
    )
    waited = accounting.Process("bash", 1, False, False, children_ticks=120)
    after = accounting.Snapshot({400: waited}, {400: (400, 0)})
    totals, rest = accounting.groups(before, after, named=[], bench_root=999)
    tick_ms = 1000 / os.sysconf("SC_CLK_TCK")
    # Their whole lives reach the shell when it waits; 3 + 1 + 2 ticks of them were before.
    assert totals["ended"] == pytest.approx((20 - 6) * tick_ms)
    assert rest["(ended, under bash)"] == pytest.approx((20 - 6) * tick_ms)


def test_the_budget_adds_up_to_the_cores_time():
    named = {"receiver": 300.0, "postgres": 50.0, "storescu": 100.0}
    others = dict.fromkeys(accounting.GROUPS, 10.0)
    spent = accounting.budget(2, 500.0, named, others, idle=200.0, steal=0.0)
    assert spent["cores"] == 1000.0
    assert spent["unseen"] == pytest.approx(1000.0 - 450.0 - 10.0 * len(accounting.GROUPS) - 200.0)
    assert sum(value for key, value in spent.items() if key != "cores") == pytest.approx(spent["cores"])


def test_a_snapshot_sees_this_thread_and_the_kernels_threads():
    taken = accounting.snapshot()
    assert taken.threads[threading.get_native_id()][0] == os.getpid()
    assert taken.processes[2].kernel  # kthreadd
    assert not taken.processes[os.getpid()].kernel


def test_run_prints_the_wire_rate_after_the_old_fields(monkeypatch):
    monkeypatch.syspath_prepend(str(INGEST))
    run = importlib.import_module("run")
    try:
        runs = [
            run.Measure(
                1.0, 0, True, wire_seconds=0.5, wire_start=0.02, wire_spread=0.0, wire_answers=100, wire_steady=200.0
            )
        ]
        assert run.wire_fields(runs, 100) == " wire 200.0 inst/s runs 200.0 start 20 ms spread 0 ms steady 200.0 inst/s"
        runs.append(run.Measure(1.0, 0, True, wire_answers=0))
        assert run.wire_fields(runs[1:], 100).startswith(" wire nan inst/s")
        assert run.wire_fields(runs[1:], 100).endswith("(answers missed)")
    finally:
        sys.modules.pop("run", None)
