#!/usr/bin/env python
"""Where the time to the first (server-rendered) image goes: the waterfall of one cold
load of /viewer/<study>/ and the server's own time per request.

Stores the CT cases as bench/viewer/run.py does, serves them with gunicorn (4 x 4) on
loopback, loads the page twice (not counted), then --runs cold loads, each printing every
request up to the stand-in with its start, the server's answer (first byte) and its end,
the page's paint entries, the viewer's marks, and, from a Chrome trace of the load, the
renderer's main-thread tasks until the stand-in was shown (style, layout, scripts). With
--trace FILE the last load's trace is kept (chrome://tracing or Perfetto). In-process, with
Django's test client on the same database: the queries and the time of the page and of
the stand-in's /rendered (WATERFALL_PROFILE=1: their cProfile).

    .venv/bin/python bench/viewer/waterfall.py [--only ct512] [--runs 3] [--trace trace.json]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # bench/viewer/run.py: seed, free_port, wait_port

ROOT = run.ROOT

READ = """() => {
    const nav = performance.getEntriesByType('navigation')[0];
    const row = (name, e) => [name, Math.round(e.startTime), Math.round(e.requestStart), Math.round(e.responseStart),
        Math.round(e.responseEnd), e.transferSize, e.initiatorType || ''];
    const rows = [row('page', nav)];
    for (const e of performance.getEntriesByType('resource')) {
        rows.push(row(e.name.split('/').slice(-2).join('/').slice(-50), e));
    }
    const marks = {};
    for (const e of performance.getEntriesByType('paint')) { marks[e.name] = Math.round(e.startTime); }
    for (const e of performance.getEntriesByType('mark')) { marks[e.name] = Math.round(e.startTime); }
    marks.domInteractive = Math.round(nav.domInteractive);
    marks.domContentLoaded = Math.round(nav.domContentLoadedEventStart);
    const preview = window.yunyingPreview || {};
    marks.shown = preview.shown && Math.round(preview.shown);
    marks.first = Math.round(window.yunyingViewer?.viewers[0].panes[0].firstImageMs || 0);
    return {rows, marks};
}"""


# What Chromium sends for a page and for an <img>: /rendered answers 406 to a request with
# no Accept at all.
ACCEPTS = {"page": "text/html,*/*;q=0.8", "stand-in": "image/avif,image/webp,image/apng,*/*;q=0.8"}


def viewer_requests(study_uid: str) -> tuple[Any, list[tuple[str, str]]]:
    """A Django test client logged in as the benchmark's user, and the viewer page's
    requests to time in process: ("page", its URL) and ("stand-in", the URL the page
    preloads), the latter left out when the page names none (a CT's stand-in is rendered
    into the page itself)."""
    import re

    from django.test import Client

    from facilities.models import User

    user = User.objects.filter(username__startswith="bench_").order_by("-pk").first()
    client = Client()
    client.force_login(user)
    page_url = f"/viewer/{study_uid}/"
    html = client.get(page_url).content.decode()
    found = re.search(r'rel="preload" as="image" href="([^"]+)"', html)
    requests = [("page", page_url)]
    if found:
        requests.append(("stand-in", found.group(1).replace("&amp;", "&")))
    return client, requests


def in_process(study_uid: str) -> None:
    """Queries and time of the page and of the stand-in, through Django's test client."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client, requests = viewer_requests(study_uid)
    accepts = ACCEPTS
    for name, url in requests:
        times = []
        for _ in range(10):
            started = time.perf_counter()
            with CaptureQueriesContext(connection) as queries:
                response = client.get(url, HTTP_ACCEPT=accepts[name])
            times.append((time.perf_counter() - started) * 1000)
        print(
            f"  in process {name}: {response.status_code}, {len(response.content)} bytes, "
            f"{len(queries)} queries, median {statistics.median(times):.1f} ms, min {min(times):.1f} ms"
        )
        for query in queries.captured_queries:
            print(f"    {query['time']}s {query['sql'][:150]}")
        if os.environ.get("WATERFALL_PROFILE"):
            import cProfile
            import pstats

            profile = cProfile.Profile()
            profile.enable()
            for _ in range(20):
                client.get(url, HTTP_ACCEPT=accepts[name])
            profile.disable()
            pstats.Stats(profile).sort_stats("cumulative").print_stats(45)


def main_thread(path: str, until: float) -> None:
    """The renderer's main-thread tasks over 3 ms from navigation start to `until`, with
    their longest named parts (layout, style, script, parse)."""
    import json

    events = json.loads(Path(path).read_text())["traceEvents"]
    starts = [
        e
        for e in events
        if e.get("name") == "navigationStart" and e.get("args", {}).get("data", {}).get("documentLoaderURL")
    ]
    if not starts:
        return
    t0, pid = starts[-1]["ts"], starts[-1]["pid"]
    names = {
        (e["pid"], e["tid"]): e["args"]["name"] for e in events if e.get("ph") == "M" and e.get("name") == "thread_name"
    }
    main = next(key for key, name in names.items() if name == "CrRendererMain" and key[0] == pid)
    on_main = [e for e in events if (e["pid"], e.get("tid")) == main and e.get("ph") == "X"]
    parts = {
        "Layout",
        "UpdateLayoutTree",
        "EvaluateScript",
        "v8.evaluateModule",
        "ParseHTML",
        "Paint",
        "Decode Image",
        "ParseAuthorStyleSheet",
        "V8.CompileCode",
        "FunctionCall",
        "FireAnimationFrame",
        "Commit",
        "PrePaint",
    }
    for task in sorted((e for e in on_main if e["name"] == "RunTask"), key=lambda e: e["ts"]):
        at = (task["ts"] - t0) / 1000
        if task.get("dur", 0) < 3000 or not 0 <= at <= until:
            continue
        inside = [
            f"{e['name']} {e['dur'] / 1000:.0f}"
            for e in on_main
            if e["name"] in parts and task["ts"] <= e["ts"] < task["ts"] + task["dur"] and e.get("dur", 0) >= 1000
        ]
        print(f"     main thread {at:6.0f} +{task['dur'] / 1000:4.0f} ms: {', '.join(inside)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", default="ct512")
    parser.add_argument("--trace", default="", help="keep the last load's Chrome trace in this file")
    parser.add_argument("--language", default="", help="the page's language (django_language cookie): zh-hans, en")
    args = parser.parse_args()
    cases = args.only.split(",")
    work = Path(tempfile.mkdtemp(prefix="viewer-waterfall-"))
    env, python, _manage = run.prepare(work)
    studies, session = run.seed(cases)
    port = run.free_port()
    server = run.serve(python, env, port)
    from playwright.sync_api import sync_playwright

    from tests.browser import launch

    try:
        run.wait_port(port)
        print(f"load average: {' '.join(f'{value:.1f}' for value in os.getloadavg())}")
        origin = f"http://127.0.0.1:{port}"
        # Before Playwright's event loop runs in this thread (Django refuses queries there).
        for case in cases:
            print(f"\n{case}, in process:")
            in_process(studies[case])
        wait = "() => window.yunyingViewer?.viewers[0].panes[0].firstImageMs != null"
        with sync_playwright() as playwright:
            browser = launch(playwright)
            for case in cases:
                url = f"{origin}/viewer/{studies[case]}/"
                print(f"\n{case}: {url}")
                context = browser.new_context()
                context.add_cookies([{"name": "sessionid", "value": session, "url": origin}])
                warm = context.new_page()
                for _ in range(2):
                    warm.goto(url)
                    warm.wait_for_function(wait, timeout=120_000)
                context.close()
                for number in range(args.runs):
                    context = browser.new_context(viewport={"width": 1280, "height": 900})
                    context.add_cookies([{"name": "sessionid", "value": session, "url": origin}])
                    if args.language:
                        context.add_cookies([{"name": "django_language", "value": args.language, "url": origin}])
                    page = run.settled_page(context)
                    trace_path = (
                        args.trace if args.trace and number == args.runs - 1 else str(work / f"trace{number}.json")
                    )
                    browser.start_tracing(
                            page=page,
                            path=trace_path,
                            categories=[
                                "devtools.timeline", "disabled-by-default-devtools.timeline",
                                "disabled-by-default-devtools.timeline.frame", "blink.user_timing", "loading",
                                "v8.execute", "disabled-by-default-v8.compile", "netlog",
                            ],
                        )  # fmt: skip
                    page.goto(url)
                    run.wait_for(page, wait)
                    page.wait_for_timeout(300)
                    browser.stop_tracing()
                    result = page.evaluate(READ)
                    print(f" run {number + 1}: {result['marks']}")
                    print(f"   {'request':<52}{'start':>6}{'req':>6}{'first':>6}{'end':>6}{'bytes':>9}")
                    for name, start, request, first, end, size, kind in result["rows"][:14]:
                        print(f"   {name:<52}{start:>6}{request:>6}{first:>6}{end:>6}{size:>9} {kind}")
                    main_thread(trace_path, until=result["marks"].get("shown") or 1000)
                    context.close()
            browser.close()
        print(f"load average: {' '.join(f'{value:.1f}' for value in os.getloadavg())}")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
