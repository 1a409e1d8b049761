#!/usr/bin/env python
"""The stand-in's critical path, counted: CPU time rather than wall time, which this shared
machine's load stretches. For each cold load of /viewer/<study>/ (a fresh browser context),
a Chrome trace gives every thread's CPU time (the trace events' thread time, `tdur`) from
navigation start to the frame that painted the server-rendered stand-in (its Element
Timing), by process and thread, and the renderer's main thread's by what it did (parse,
style, layout, paint, script); the page records when the page, the stand-in and the other
requests came in. In process, Django's test client gives the server's CPU time for the page
and for the stand-in (time.process_time, fastest of 15), and their queries.

With --baseline <checkout> (a clone of main, its viewer built) a second gunicorn serves that
checkout from the same database and images, and the loads alternate between the two; each
--variant NAME=DIR (repeatable) adds another checkout to the turn (candidates of one change).
Besides the times it counts, up to the stand-in's paint, the requests begun (the page's
own among them) and the kilobytes that came in.

    .venv/bin/python bench/viewer/standin.py [--only ct128,ct512] [--runs 5] [--baseline DIR] [--variant NAME=DIR]

Prints medians over the runs: wall times (ms from navigation start, to read with the load
printed beside them) and CPU times (ms), which hold better under load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # bench/viewer/run.py: prepare, seed, free_port, wait_port

ROOT = run.ROOT

CATEGORIES = [
    "toplevel",
    "devtools.timeline",
    "disabled-by-default-devtools.timeline",
    "blink.user_timing",
    "loading",
    "v8.execute",
]

# What the page itself records: when the stand-in was painted and when each request ended.
READ = """() => {
    const nav = performance.getEntriesByType('navigation')[0];
    const ends = {page: nav.responseEnd, html: nav.domInteractive};
    for (const e of performance.getEntriesByType('resource')) {
        const name = /[/]rendered[?]/.test(e.name) ? 'stand-in' : /[/]metadata$/.test(e.name) ? 'metadata'
            : /[/]frames[/]1$/.test(e.name) ? 'frame' : /[/]viewer-[^/]+[.]js$/.test(e.name) ? 'entry' : '';
        if (name && !(name in ends)) { ends[name] = e.responseEnd; ends[name + ' asked'] = e.startTime; }
    }
    for (const e of performance.getEntriesByType('paint')) { ends[e.name] = e.startTime; }
    ends.shown = window.yunyingPreview ? window.yunyingPreview.shown : null;
    // Before the stand-in's paint: the requests begun (the page's own counted), and the
    // bytes that came in (the page's and those of the requests that ended by then).
    const before = performance.getEntriesByType('resource').filter((e) => e.startTime < ends.shown);
    ends['requests before paint'] = 1 + before.length;
    ends['kB in before paint'] = (nav.encodedBodySize + before.filter((e) => e.responseEnd < ends.shown)
        .reduce((sum, e) => sum + e.encodedBodySize, 0)) / 1000;
    return ends;
}"""

# The renderer main thread's work by kind: trace event names (self time, thread time).
KINDS = {
    "parse HTML": {"ParseHTML"},
    "style": {"UpdateLayoutTree", "ParseAuthorStyleSheet", "RecalculateStyles"},
    "layout": {"Layout"},
    "paint": {"Paint", "PrePaint", "PaintImage", "Commit", "Layerize", "UpdateLayer"},
    "script": {"EvaluateScript", "v8.evaluateModule", "FunctionCall", "V8.CompileCode", "v8.compile",
               "RunMicrotasks", "TimerFire", "FireAnimationFrame", "EventDispatch", "v8.run"},
    "image decode": {"Decode Image", "ImageDecodeTask", "Decode LazyPixelRef"},
}  # fmt: skip
WRAPPERS = {"ThreadControllerImpl::RunTask", "RunTask", "ThreadPool_RunTask"}


def thread_cpu(events: list[dict[str, Any]], start: float, end: float) -> dict[tuple[int, int], float]:
    """Per (pid, tid), the thread time (ms) of its outermost complete events that begin in
    [start, end]: what the thread spent on a CPU in that window."""
    by_thread: dict[tuple[int, int], list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        if e.get("ph") == "X" and "tdur" in e and start <= e["ts"] <= end:
            by_thread[(e["pid"], e["tid"])].append(e)
    result = {}
    for key, items in by_thread.items():
        items.sort(key=lambda e: (e["ts"], -e["dur"]))
        total, until = 0.0, -1.0
        for e in items:
            if e["ts"] >= until:
                total += e["tdur"]
                until = e["ts"] + e["dur"]
        result[key] = total / 1000
    return result


def main_thread_kinds(
    events: list[dict[str, Any]], thread: tuple[int, int], start: float, end: float
) -> dict[str, float]:
    """The main thread's thread time (ms) in [start, end] by kind (KINDS), self time: an
    event's own, without the events inside it."""
    items = sorted(
        (e for e in events if (e["pid"], e.get("tid")) == thread and e.get("ph") == "X" and "tdur" in e
         and start <= e["ts"] <= end),
        key=lambda e: (e["ts"], -e["dur"]),
    )  # fmt: skip
    totals: dict[str, float] = defaultdict(float)
    stack: list[list[Any]] = []  # [end, name, children's thread time, thread time]
    for e in items:
        while stack and stack[-1][0] <= e["ts"]:
            done = stack.pop()
            totals[done[1]] += done[3] - done[2]
        if stack:
            stack[-1][2] += e["tdur"]
        stack.append([e["ts"] + e["dur"], e["name"], 0.0, e["tdur"]])
    while stack:
        done = stack.pop()
        totals[done[1]] += done[3] - done[2]
    kinds: dict[str, float] = defaultdict(float)
    for name, us in totals.items():
        kind = next((kind for kind, names in KINDS.items() if name in names), "other")
        kinds[kind] += us / 1000
    return kinds


def analyse(trace: dict[str, Any], shown: float) -> dict[str, float]:
    """CPU (ms) from navigation start to `shown` (ms after it): by process kind and, for
    the renderer's main thread, by kind of work."""
    events = trace["traceEvents"]
    names = {
        (e["pid"], e["tid"]): e["args"]["name"] for e in events if e.get("ph") == "M" and e.get("name") == "thread_name"
    }
    processes = {e["pid"]: e["args"]["name"] for e in events if e.get("ph") == "M" and e.get("name") == "process_name"}
    starts = [
        e
        for e in events
        if e.get("name") == "navigationStart"
        and "/viewer/" in str(e.get("args", {}).get("data", {}).get("documentLoaderURL", ""))
    ]
    t0, pid = starts[-1]["ts"], starts[-1]["pid"]
    end = t0 + shown * 1000
    cpu = thread_cpu(events, t0, end)
    out: dict[str, float] = defaultdict(float)
    main = next(key for key, name in names.items() if name == "CrRendererMain" and key[0] == pid)
    for key, ms in cpu.items():
        thread = names.get(key, "?")
        if key == main:
            out["cpu renderer main"] += ms
        elif key[0] == pid:
            out["cpu renderer other"] += ms
        else:
            process = processes.get(key[0], "?").lower()
            kind = "gpu" if "gpu" in process else "browser" if "browser" in process else "other"
            if "network" in thread.lower() or "network" in process:
                kind = "network"
            out[f"cpu {kind}"] += ms
    out["cpu chrome all"] = sum(cpu.values())
    for kind, ms in main_thread_kinds(events, main, t0, end).items():
        out[f"main {kind}"] = ms
    return out


def in_process(study_uid: str, rounds: int = 15) -> dict[str, float]:
    """The server's CPU time (ms, fastest of `rounds`) for the page and the stand-in, and
    their queries, through Django's test client."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from waterfall import ACCEPTS, viewer_requests

    client, requests = viewer_requests(study_uid)
    accepts = ACCEPTS
    out = {}
    for name, url in requests:
        times = []
        for _ in range(rounds):
            started = time.process_time()
            with CaptureQueriesContext(connection) as queries:
                response = client.get(url, HTTP_ACCEPT=accepts[name])
            times.append((time.process_time() - started) * 1000)
        out[f"server {name} cpu"] = min(times)
        out[f"server {name} queries"] = len(queries)
        out[f"server {name} bytes"] = len(response.content)
    return out


def load(browser: Any, url: str, session: str, trace_path: Path, settle: bool = True) -> dict[str, float]:
    origin = url.split("/viewer/")[0]
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.add_cookies([{"name": "sessionid", "value": session, "url": origin}])
    # Navigated once the new window has opened (run.settled_page), unless asked otherwise.
    page = run.settled_page(context) if settle else context.new_page()
    browser.start_tracing(categories=CATEGORIES, path=str(trace_path))
    page.goto(url, timeout=300_000)
    run.wait_for(page, "() => window.yunyingPreview && window.yunyingPreview.shown != null")
    page.wait_for_timeout(100)
    browser.stop_tracing()
    ends = page.evaluate(READ)
    context.close()
    result = {f"at {name}": value for name, value in ends.items() if value is not None}
    result.update(analyse(json.loads(trace_path.read_text()), ends["shown"]))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only", default="ct128,ct512")
    parser.add_argument("--baseline", type=Path)
    parser.add_argument("--keep", type=Path, help="keep the traces in this directory")
    parser.add_argument(
        "--unsettled-too",
        action="store_true",
        help="also navigate at once after opening the window (before it has settled), alternated",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="another checkout served and loaded in turn with the others (repeatable; its viewer built)",
    )
    args = parser.parse_args()
    cases = args.only.split(",")
    work = Path(tempfile.mkdtemp(prefix="viewer-standin-"))
    env, python, _manage = run.prepare(work)
    studies, session = run.seed(cases)
    served = [("after", env, ROOT)]
    if args.baseline:
        baseline = args.baseline.resolve()
        served = [("before", run.checkout_env(python, env, work, "before", baseline), baseline), *served]
    for name, checkout in run.checkouts(args.variant).items():
        served.insert(len(served) - 1, (name, run.checkout_env(python, env, work, name, checkout), checkout))
    servers = {}
    for label, server_env, checkout in served:
        port = run.free_port()
        process = run.serve(python, server_env, port, checkout)
        servers[label] = (process, port)
    from playwright.sync_api import sync_playwright

    from tests.browser import launch

    traces = args.keep or work / "traces"
    traces.mkdir(parents=True, exist_ok=True)
    try:
        for _process, port in servers.values():
            run.wait_port(port)
        print(f"load average before: {' '.join(f'{value:.1f}' for value in os.getloadavg())}")
        for case in cases:
            print(f"\n{case}, in process (this checkout):")
            for name, value in in_process(studies[case]).items():
                print(f"  {name}: {value:.1f}")
        with sync_playwright() as playwright:
            browser = launch(playwright)
            for case in cases:
                results: dict[str, dict[str, list[float]]] = {label: defaultdict(list) for label in servers}
                for _label, (_process, port) in servers.items():
                    url = f"http://127.0.0.1:{port}/viewer/{studies[case]}/"
                    warm = browser.new_context()
                    warm.add_cookies([{"name": "sessionid", "value": session, "url": f"http://127.0.0.1:{port}"}])
                    page = warm.new_page()
                    for _ in range(2):
                        page.goto(url, timeout=300_000)
                        page.wait_for_function("() => window.yunyingPreview?.shown != null", timeout=300_000)
                    warm.close()
                variants = [(label, True) for label in servers]
                if args.unsettled_too:
                    variants = [
                        (f"{label}/{kind}", settle)
                        for label in servers
                        for kind, settle in (("now", False), ("settled", True))
                    ]
                    results = {name: defaultdict(list) for name, _settle in variants}
                for number in range(args.runs):
                    for name, settle in variants:
                        _process, port = servers[name.split("/")[0]]
                        url = f"http://127.0.0.1:{port}/viewer/{studies[case]}/"
                        path = traces / f"{case}-{name.replace('/', '-')}-{number}.json"
                        result = load(browser, url, session, path, settle)
                        for key, value in result.items():
                            results[name][key].append(value)
                keys = sorted({key for result in results.values() for key in result})
                print(f"\n{case}, medians of {args.runs} cold loads (ms):")
                print(f"  {'':<28}" + "".join(f"{label:>10}" for label in results))
                for key in keys:
                    cells = []
                    for result in results.values():
                        values = result.get(key, [])
                        # A kind absent from a load counts as 0 in it.
                        values = values + [0.0] * (args.runs - len(values))
                        cells.append(f"{statistics.median(values):>10.1f}")
                    print(f"  {key:<28}" + "".join(cells))
            browser.close()
        print(f"\nload average after: {' '.join(f'{value:.1f}' for value in os.getloadavg())}")
    finally:
        for process, _port in servers.values():
            process.terminate()
            process.wait(timeout=30)


if __name__ == "__main__":
    main()
