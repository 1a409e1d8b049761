#!/usr/bin/env python
"""The 200-slice CT stack's path, counted: what a cold load of /viewer/<study>/ spends from
Cornerstone's first frame to the whole stack in the cache, in counts that hold on a loaded
machine rather than in wall time alone.

Stores the CT 512 case as bench/viewer/run.py does, serves it with gunicorn (4 x 4) on
loopback and, per cold load (a fresh context, navigated once its window has opened):

- the frames requests: how many, their bytes, how many were in flight at a time (mean over
  the stack's window), and each one's wait for its first byte and its body's transfer;
- the server's CPU per frame: the gunicorn processes' CPU time (/proc) over the load, less
  the page's and the first image's share, divided by the frames fetched in batches;
- the browser's CPU (/proc, every Chromium process) over the load;
- from a Chrome trace of the load: each thread's CPU (its trace events' thread time) in the
  stack's window, the page's main thread and the decode workers by name, so decode CPU per
  frame on each; and the idle time in that window, when no frames request was in flight and
  neither the main thread nor a worker ran a task (what neither network nor decode covers).

With --baseline <checkout> (a clone of main with its viewer built) a second gunicorn serves
it from the same database and images, and the loads alternate before / after.

    .venv/bin/python bench/viewer/stack.py [--runs 3] [--only ct512,ct128] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # bench/viewer/run.py: prepare, seed, free_port, wait_port, settled_page, browser_cpu_ticks
from standin import thread_cpu

ROOT = run.ROOT
TICK_MS = 1000 / os.sysconf("SC_CLK_TCK")
CATEGORIES = ["toplevel", "devtools.timeline", "disabled-by-default-devtools.timeline", "blink.user_timing", "loading"]
# A thread's tasks: what it is busy with, for the idle time.
TASKS = ("RunTask", "ThreadControllerImpl::RunTask")
# With --profile: the sampling profiler too, for the JavaScript functions by self time.
PROFILER = ["v8.execute", "disabled-by-default-v8.cpu_profiler"]

READ = """() => {
    const pane = window.yunyingViewer.viewers[0].panes[0];
    const mark = (name) => performance.getEntriesByName(name, 'mark')[0]?.startTime;
    const frames = performance.getEntriesByType('resource').filter((e) => /[/]frames([?]|[/])/.test(e.name))
        .map((e) => ({batch: /[/]frames[?]/.test(e.name), start: e.startTime, asked: e.requestStart,
                      first: e.responseStart, end: e.responseEnd, bytes: e.encodedBodySize}));
    return {first: pane.firstImageMs, stack: pane.stackMs, count: pane.imageIds.length, failed: pane.failed,
            stackMark: mark('yunying:pane0:stack'), frames};
}"""


def tree_ticks(root: int) -> int:
    """CPU clock ticks used so far by process `root` and its descendants."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        rest = stat[stat.rindex(")") + 2 :].split()
        parents[int(entry.name)], ticks[int(entry.name)] = int(rest[1]), int(rest[11]) + int(rest[12])
    ours, seen = {root}, 0
    while len(ours) != seen:
        seen = len(ours)
        ours |= {pid for pid, parent in parents.items() if parent in ours}
    return sum(ticks.get(pid, 0) for pid in ours)


def union(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[list[float]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(start, end) for start, end in merged]


def covered(intervals: list[tuple[float, float]], start: float, end: float) -> float:
    return sum(max(0.0, min(b, end) - max(a, start)) for a, b in union(intervals))


def analyse(trace: dict[str, Any], page: dict[str, Any]) -> dict[str, float]:
    """The stack's window (the pane's stack set -> the whole stack cached) in the trace:
    CPU by thread kind, decode CPU per batched frame, idle time, requests in flight."""
    events = trace["traceEvents"]
    names = {
        (e["pid"], e["tid"]): e["args"]["name"] for e in events if e.get("ph") == "M" and e.get("name") == "thread_name"
    }
    starts = [
        e
        for e in events
        if e.get("name") == "navigationStart"
        and "/viewer/" in str(e.get("args", {}).get("data", {}).get("documentLoaderURL", ""))
    ]
    t0, pid = starts[-1]["ts"], starts[-1]["pid"]
    # The window: from Cornerstone's first frame (the stack's own work starts about then) to
    # the whole stack cached, in trace microseconds.
    begin, end = t0 + page["first"] * 1000, t0 + page["stack"] * 1000
    cpu = thread_cpu(events, begin, end)
    out: dict[str, float] = defaultdict(float)
    busy: list[tuple[float, float]] = []
    for key, ms in cpu.items():
        thread = names.get(key, "?")
        if key[0] == pid and thread == "CrRendererMain":
            out["cpu main"] += ms
        elif key[0] == pid and "DedicatedWorker" in thread:
            out["cpu workers"] += ms
        elif key[0] == pid:
            out["cpu renderer other"] += ms
        else:
            out["cpu other processes"] += ms
        if key[0] == pid and (thread == "CrRendererMain" or "DedicatedWorker" in thread):
            busy += [
                (e["ts"], e["ts"] + e["dur"])
                for e in events
                if (e["pid"], e.get("tid")) == key and e.get("ph") == "X" and e["name"] in TASKS
                and begin <= e["ts"] <= end and e["dur"] >= 200
            ]  # fmt: skip
    batched = [f for f in page["frames"] if f["batch"]]
    network = [(t0 + f["start"] * 1000, t0 + f["end"] * 1000) for f in batched]
    span = end - begin
    out["idle ms"] = (span - covered(network + busy, begin, end)) / 1000
    out["no request ms"] = (span - covered(network, begin, end)) / 1000
    in_flight = sum(max(0.0, min(b, end) - max(a, begin)) for a, b in network)
    out["in flight"] = in_flight / span if span else 0
    return out


def functions(trace: dict[str, Any], top: int = 15) -> str:
    """The stack's window's JavaScript functions by self time (ms), on the page's main thread
    and on its workers together."""
    from chrometrace import profiles

    events = trace["traceEvents"]
    names = {
        (e["pid"], e["tid"]): e["args"]["name"] for e in events if e.get("ph") == "M" and e.get("name") == "thread_name"
    }
    marks = {e["name"]: e for e in events if str(e.get("name", "")).startswith("yunying:pane0:")}
    begin, end = marks["yunying:pane0:first"]["ts"], marks["yunying:pane0:stack-cached"]["ts"]
    pid = marks["yunying:pane0:first"]["pid"]
    lines = []
    by_kind: dict[str, dict[tuple[str, str], float]] = {"main": defaultdict(float), "workers": defaultdict(float)}
    for key, samples in profiles(events, begin, end).items():
        thread = names.get(key, "")
        kind = "main" if key[0] == pid and thread == "CrRendererMain" else ""
        kind = "workers" if key[0] == pid and "DedicatedWorker" in thread else kind
        for function, ms in samples.items():
            if kind:
                by_kind[kind][function] += ms
    for kind, samples in by_kind.items():
        lines.append(f"  {kind}: {sum(samples.values()):.0f} ms of samples")
        for (function, script), ms in sorted(samples.items(), key=lambda item: -item[1])[:top]:
            lines.append(f"    {ms:8.1f}  {function}  {script}")
    return "\n".join(lines)


def load(
    browser: Any, url: str, session: str, server_pid: int, trace_path: Path, profile: bool = False
) -> dict[str, float]:
    origin = url.split("/viewer/")[0]
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.add_cookies([{"name": "sessionid", "value": session, "url": origin}])
    page = run.settled_page(context)
    browser.start_tracing(categories=CATEGORIES + (PROFILER if profile else []), path=str(trace_path))
    server_before, browser_before = tree_ticks(server_pid), run.browser_cpu_ticks()
    page.goto(url, timeout=300_000)
    page.wait_for_function("() => window.yunyingViewer?.viewers[0].panes[0].stackMs != null", timeout=300_000)
    server_ms = (tree_ticks(server_pid) - server_before) * TICK_MS
    browser_ms = (run.browser_cpu_ticks() - browser_before) * TICK_MS
    browser.stop_tracing()
    found = page.evaluate(READ)
    context.close()
    assert found["failed"] == 0, "images failed to load"
    batched = [f for f in found["frames"] if f["batch"]]
    frames_batched = max(1, found["count"] - 1)
    result = {
        "first ms": found["first"],
        "stack ms": found["stack"],
        "requests": len(found["frames"]),
        "MB": sum(f["bytes"] for f in found["frames"]) / 1e6,
        "server cpu ms (load)": server_ms,
        "server cpu ms/frame (load)": server_ms / frames_batched,
        "browser cpu ms (load)": browser_ms,
        "wait first byte ms (median)": statistics.median(f["first"] - f["asked"] for f in batched) if batched else 0,
        "transfer ms (median)": statistics.median(f["end"] - f["first"] for f in batched) if batched else 0,
        "first batch asked": min((f["start"] for f in batched), default=0),
        "last batch in": max((f["end"] for f in batched), default=0),
    }
    analysed = analyse(json.loads(trace_path.read_text()), found)
    result.update(analysed)
    result["decode cpu ms/frame (workers)"] = analysed.get("cpu workers", 0) / frames_batched
    result["main cpu ms/frame"] = analysed.get("cpu main", 0) / frames_batched
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", default="ct512")
    parser.add_argument("--baseline", type=Path)
    parser.add_argument(
        "--profile",
        action="store_true",
        help="record the sampling profiler too (slower), and print the stack "
        "window's JavaScript functions by self time on the main thread and the workers",
    )
    args = parser.parse_args()
    cases = args.only.split(",")
    work = Path(tempfile.mkdtemp(prefix="viewer-stack-"))
    env, python, _manage = run.prepare(work)
    studies, session = run.seed(cases)
    served = [("after", env, ROOT)]
    if args.baseline:
        baseline = args.baseline.resolve()
        served = [("before", run.checkout_env(python, env, work, "before", baseline), baseline), *served]
    servers: dict[str, tuple[subprocess.Popen, int]] = {}
    for label, server_env, checkout in served:
        port = run.free_port()
        servers[label] = (
            run.serve(python, server_env, port, checkout),
            port,
        )  # fmt: skip
    from playwright.sync_api import sync_playwright

    from tests.browser import launch

    try:
        for _process, port in servers.values():
            run.wait_port(port)
        print(f"load average before: {' '.join(f'{value:.1f}' for value in os.getloadavg())}")
        with sync_playwright() as playwright:
            browser = launch(playwright)
            for case in cases:
                results: dict[str, dict[str, list[float]]] = {label: defaultdict(list) for label in servers}
                for _process, port in servers.values():
                    # Two loads first, not counted: the server's workers import their code.
                    url = f"http://127.0.0.1:{port}/viewer/{studies[case]}/"
                    context = browser.new_context()
                    context.add_cookies([{"name": "sessionid", "value": session, "url": url.split("/viewer/")[0]}])
                    warm = context.new_page()
                    for _ in range(2):
                        warm.goto(url, timeout=300_000)
                        warm.wait_for_function(
                            "() => window.yunyingViewer?.viewers[0].panes[0].stackMs != null", timeout=300_000
                        )
                    context.close()
                for number in range(args.runs):
                    for label, (process, port) in servers.items():
                        url = f"http://127.0.0.1:{port}/viewer/{studies[case]}/"
                        path = work / f"{case}-{label}-{number}.json"
                        result = load(browser, url, session, process.pid, path, args.profile)
                        if args.profile:
                            print(f"{case} {label} {number + 1}:\n{functions(json.loads(path.read_text()))}")
                        for key, value in result.items():
                            results[label][key].append(value)
                print(f"\n{case}, medians of {args.runs} cold loads ({', '.join(servers)}):")
                keys = dict.fromkeys(key for label in servers for key in results[label])
                for key in keys:
                    values = "  ".join(f"{statistics.median(results[label][key] or [0]):>10.2f}" for label in servers)
                    print(f"  {key:<34}{values}")
            browser.close()
        print(f"load average after: {' '.join(f'{value:.1f}' for value in os.getloadavg())}")
    finally:
        for process, _port in servers.values():
            process.terminate()
            process.wait(timeout=30)


if __name__ == "__main__":
    main()
