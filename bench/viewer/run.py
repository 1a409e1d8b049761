#!/usr/bin/env python
"""Viewer benchmark: time to the first image and to the whole stack in headless Chromium.

Stores, through the ingest service, a 200-slice 512 x 512 CT series, a 200-slice
128 x 128 one (the size of the reference measurement in docs), a 15 MB DX (2736 x 2736,
16-bit) and an ultrasound clip (100 frames of 800 x 600, YBR_FULL_422 JPEG: each frame
an image of the stack, the whole stack the clip ready to play); serves the platform with
gunicorn over loopback; and opens each study in /viewer/<study>/ with a cold browser
cache (a fresh context, navigated once its new window has finished opening: settled_page),
then once more with the viewer's JavaScript cached. Times are milliseconds from
navigation start, as the page itself records them. Two times to the first image:
"visible" is when the first image is on screen at all, which is the server-rendered JPEG
(in the page itself for an image of at most 1024 x 1024 pixels, else from /rendered) the
page shows in the pane while the viewer's code loads, unless Cornerstone was quicker;
"Cornerstone" is the viewer's own first frame (window/level, scrolling and measuring work
from then on). The whole stack is when every image of the series is
decoded in the cache. For the CT cases, once the stack is cached, the MPR button is
pressed and the time until the three planes are drawn from the whole volume is printed
("MPR ready", its code chunk fetched then). Prints medians of --runs.

    bash scripts/build-viewer.sh
    .venv/bin/python bench/viewer/run.py [--runs 5] [--only ct512,ct128,dx,us] [--storage local|s3|both]

With --storage both, the images are also copied (manage.py storage_copy) to moto's S3
server on loopback and a second gunicorn serves them from there (STORAGE_BACKEND=s3);
each case is measured on one and then the other.

--trace DIR records one more cold load per case and server (not counted) as a Chrome trace
(DIR/<case>-<server>.json) and prints where the browser's time went until Cornerstone's
first frame (bench/viewer/chrometrace.py): the page's main thread, its workers and the GPU
process, by trace event and by JavaScript function (the sampling profiler).

Runs on a throwaway SQLite database and image store in a temporary directory unless
DATABASE_URL is set.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def prepare(work: Path) -> tuple[dict[str, str], str, str]:
    """The environment of a benchmark's server in `work` (its SQLite database unless
    DATABASE_URL is set, its store, its static files), set in this process too, with the
    database migrated and the static files collected; and the python and manage.py to run."""
    env = dict(os.environ)
    env.setdefault("DATABASE_URL", f"sqlite:///{work / 'bench.sqlite3'}")
    env.update(
        {
            "YUNYING_VAR_DIR": str(work),
            "STORAGE_ROOT": str(work / "storage"),
            "STATIC_ROOT": str(work / "static"),
            "DJANGO_SETTINGS_MODULE": "cloudpacs.settings",
            "DEBUG": "false",
        }
    )
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    python = sys.executable
    manage = str(ROOT / "manage.py")
    subprocess.run([python, manage, "migrate", "--noinput", "-v0"], check=True, env=env, cwd=ROOT)
    subprocess.run([python, manage, "collectstatic", "--noinput", "-v0"], check=True, env=env, cwd=ROOT)
    return env, python, manage


def seed(cases: list[str]) -> tuple[dict[str, str], str]:
    """Store the studies; return {case: study UID} and a session cookie value."""
    import django

    django.setup()
    import numpy as np
    from django.test import Client
    from pydicom.uid import DigitalXRayImageStorageForPresentation, generate_uid

    from cloudpacs.services import ingest_instance
    from facilities.models import ExamKind, User
    from tests.factories import make_dataset, make_facility, make_modality, make_user, write_dataset

    township = make_facility("BENCH")
    technologist = make_user(User.Role.TECHNOLOGIST, township, username=f"bench_{os.getpid()}")
    ct = make_modality(township, ExamKind.CT, f"BENCH_CT_{os.getpid() % 1000}")
    dr = make_modality(township, ExamKind.DR, f"BENCH_DR_{os.getpid() % 1000}")
    files = Path(tempfile.mkdtemp(prefix="viewer-bench-files-"))
    rng = np.random.default_rng(5)

    def store(ds, modality) -> None:
        path = write_dataset(ds, files / f"{ds.SOPInstanceUID}.dcm")
        ingest_instance(
            path,
            transfer_syntax_uid=ds.file_meta.TransferSyntaxUID,
            sop_class_uid=ds.SOPClassUID,
            sop_instance_uid=ds.SOPInstanceUID,
            modality=modality,
        )
        path.unlink()

    studies: dict[str, str] = {}
    for case, size in (("ct512", 512), ("ct128", 128)):
        if case not in cases:
            continue
        study_uid, series_uid = generate_uid(), generate_uid()
        yy, xx = np.mgrid[0:size, 0:size]
        body = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (0.42 * size) ** 2
        for number in range(1, 201):
            hu = np.where(body, 40 + rng.normal(0, 20, (size, size)), -1000)
            ds = make_dataset(
                study_uid=study_uid, series_uid=series_uid, instance_number=number, rows=size, columns=size
            )
            ds.SliceThickness = 1.25
            # Where each slice lies, as a scanner writes it: the MPR needs it.
            ds.PixelSpacing = [0.7, 0.7]
            ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
            ds.ImagePositionPatient = [-size * 0.35, -size * 0.35, -1.25 * number]
            ds.PixelData = np.clip(hu + 1024, 0, 4095).astype(np.uint16).tobytes()
            store(ds, ct)
        studies[case] = study_uid
    if "us" in cases:
        # An ultrasound clip as consoles send it: 100 frames of 600 x 800, YBR_FULL_422
        # JPEG baseline, one fragment per frame (about 3 MB), at 30 frames a second.
        from io import BytesIO

        from PIL import Image
        from pydicom.encaps import encapsulate
        from pydicom.uid import JPEGBaseline8Bit, UltrasoundMultiFrameImageStorage

        rows, columns, count = 600, 800, 100
        yy, xx = np.mgrid[0:rows, 0:columns]
        fragments = []
        for number in range(count):
            cone = ((xx - columns / 2) ** 2 + yy**2 < (rows * 0.95) ** 2) & (np.abs(xx - columns / 2) < yy * 0.7)
            speckle = rng.gamma(2.0, 40.0, (rows, columns)) * (1 + 0.3 * np.sin(yy / 20.0 + number / 5))
            gray = np.where(cone, np.clip(speckle, 0, 255), 0).astype(np.uint8)
            rgb = np.repeat(gray[..., None], 3, axis=2)
            rgb[40:80, 40 + number * 5 : 80 + number * 5] = (230, 60, 40)  # a moving colour marker
            buffer = BytesIO()
            Image.fromarray(rgb).save(buffer, format="JPEG", quality=90, subsampling=1)
            fragments.append(buffer.getvalue())
        ds = make_dataset(
            sop_class_uid=UltrasoundMultiFrameImageStorage,
            modality="US",
            rows=rows,
            columns=columns,
            transfer_syntax_uid=JPEGBaseline8Bit,
        )
        for keyword in ("RescaleIntercept", "RescaleSlope", "WindowCenter", "WindowWidth"):
            delattr(ds, keyword)
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "YBR_FULL_422", 0
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ds.NumberOfFrames, ds.FrameIncrementPointer, ds.FrameTime = count, 0x00181063, 33.3
        ds.PixelData = encapsulate(fragments)
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
        store(ds, ct)
        studies["us"] = ds.StudyInstanceUID
    if "dx" in cases:
        size = 2736
        yy, xx = np.mgrid[0:size, 0:size]
        stored = (2000 + 1500 * np.sin(xx / 200.0) * np.cos(yy / 300.0)).astype(np.uint16)
        ds = make_dataset(sop_class_uid=DigitalXRayImageStorageForPresentation, modality="DX", rows=size, columns=size)
        del ds.RescaleIntercept
        del ds.RescaleSlope
        ds.WindowCenter, ds.WindowWidth = 2000, 3000
        ds.PixelData = stored.tobytes()
        store(ds, dr)
        studies["dx"] = ds.StudyInstanceUID
    client = Client()
    client.force_login(technologist)
    from django.conf import settings

    return studies, client.cookies[settings.SESSION_COOKIE_NAME].value


def browser_cpu_ticks() -> int:
    """The CPU time (clock ticks) used so far by the Chromium processes this process started
    (through Playwright's driver), threads included."""
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    ticks: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ... utime stime ...": comm may hold spaces.
        name, rest = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()
        pid = int(entry.name)
        parents[pid], names[pid], ticks[pid] = int(rest[1]), name, int(rest[11]) + int(rest[12])
    ours, seen = {os.getpid()}, 0
    while len(ours) != seen:
        seen = len(ours)
        ours |= {pid for pid, parent in parents.items() if parent in ours}
    return sum(ticks[pid] for pid in ours if names[pid].startswith("chrom"))


def settled_page(context: Any) -> Any:
    """A new page of `context`, once the browser has finished opening its window.

    Each cold load has a fresh context, which Chromium opens as a new window, and the new
    window starts its own user interface: the omnibox popup's WebUI renderer
    (chrome://omnibox-popup.top-chrome), about 0.5 s of CPU on this machine in the second
    after the window opens. A reader opens a study from a window that is already open; left
    in, that start ran on the two cores in the same moments as the page's load and the
    server's answers (docs/viewer.md). So the page is navigated only once the browser's
    processes have used under 20 ms of CPU in 200 ms (at most 5 s)."""
    page = context.new_page()
    tick = 1000 / os.sysconf("SC_CLK_TCK")
    before, deadline = browser_cpu_ticks(), time.monotonic() + 5
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = browser_cpu_ticks()
        if (now - before) * tick < 20:
            break
        before = now
    return page


def wait_for(page: Any, function: str, timeout: float = 300) -> None:
    """Until `function` (a JavaScript function's source, run in the page) returns a truthy
    value, asked every 50 ms with page.evaluate. Not Playwright's wait_for_function: its
    first use in a page injects Playwright's own script of some 330 KB (one DevTools message
    for the page's main thread to take in, then compiled and run: 15-25 ms of that thread in
    a traced cold load), which came as goto returned, at the page's load event, beside the
    first image that the benchmark times and that no reader's browser has in its way."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(function):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{function} still false after {timeout} s")
        time.sleep(0.05)


# Each request's start and end (ms from navigation start), for --trace-like debugging.
TRACE = """() => [
    ['navigation', 0, Math.round(performance.getEntriesByType('navigation')[0].responseEnd)],
    ...performance.getEntriesByType('resource').slice(0, 12).map(
        (e) => [e.name.split('/').slice(-3).join('/').slice(-60), Math.round(e.startTime), Math.round(e.responseEnd),
                e.transferSize]),
    ...performance.getEntriesByType('resource').slice(-3).map(
        (e) => [e.name.split('/').slice(-3).join('/').slice(-60), Math.round(e.startTime), Math.round(e.responseEnd)]),
]"""


def measure(
    url: str, session: str, runs: int, mpr: bool = False, warmup: bool = True, trace: Path | None = None
) -> dict[str, list[float]]:
    from playwright.sync_api import sync_playwright

    results: dict[str, list[float]] = {
        "visible": [], "first": [], "stack": [], "mb": [], "warm_visible": [], "warm_first": [], "warm_stack": [],
    }  # fmt: skip
    # A function, not an expression: Playwright would eval an expression, which the
    # page's Content-Security-Policy refuses.
    wait = "() => window.yunyingViewer?.viewers[0].panes[0].stackMs != null"
    read = """async () => {
        const pane = window.yunyingViewer.viewers[0].panes[0];
        // When the stand-in was painted, by the browser's own record (Largest Contentful
        // Paint), the same way whichever way the page put it there.
        const largest = await new Promise((resolve) => {
            new PerformanceObserver((list, observer) => { observer.disconnect(); resolve(list.getEntries()); })
                .observe({type: 'largest-contentful-paint', buffered: true});
            setTimeout(() => resolve([]), 200);
        });
        const standIn = largest.find((e) => /[/]rendered[?]|^data:image[/]jpeg/.test(e.url || ''));
        const resources = performance.getEntriesByType('resource');
        const bytes = resources.reduce((sum, e) => sum + (e.encodedBodySize || 0), 0);
        const end = (pattern) => resources.find((e) => pattern.test(e.name))?.responseEnd;
        // The viewer leaves User Timing marks (performance.mark) at its steps.
        const mark = (name) => performance.getEntriesByName(name, 'mark')[0]?.startTime;
        const steps = {
            page: performance.getEntriesByType('navigation')[0].responseEnd,
            js: end(/[/]viewer(-[^/]+)?[.]js$/),
            metadata: end(/[/]metadata$/),
            code: mark('yunying:code'),
            init: mark('yunying:init'),
            parsed: mark('yunying:pane0:metadata'),
            frame: end(/[/]frames[/]/),
            tools: mark('yunying:tools'),
        };
        const shown = window.yunyingPreview?.shown;
        const visible = shown != null && shown < pane.firstImageMs ? shown : pane.firstImageMs;
        steps.preview = shown ?? 0;
        steps.painted = standIn ? (standIn.renderTime || standIn.loadTime) : 0;
        return {first: pane.firstImageMs, visible, stack: pane.stackMs, bytes, failed: pane.failed, steps};
    }"""
    origin = url.split("/viewer/")[0]
    from tests.browser import launch

    with sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            # One load first, not counted: the server's workers import and compile what
            # a running server has long had in memory. "Cold" below is the browser's cache.
            context = browser.new_context()
            context.add_cookies([{"name": "sessionid", "value": session, "url": origin}])
            untimed = context.new_page()
            for _ in range(2 if warmup else 0):
                untimed.goto(url, timeout=300_000)
                untimed.wait_for_function(wait, timeout=300_000)
            context.close()
            if trace is not None:
                # One cold load more, traced (not counted: tracing slows the page).
                from chrometrace import CATEGORIES, summary

                context = browser.new_context(viewport={"width": 1280, "height": 900})
                context.add_cookies([{"name": "sessionid", "value": session, "url": origin}])
                page = settled_page(context)
                browser.start_tracing(categories=CATEGORIES, path=str(trace))
                page.goto(url, timeout=300_000)
                page.wait_for_function(wait, timeout=300_000)
                browser.stop_tracing()
                context.close()
                print(f"\n{trace}:\n{summary(json.loads(trace.read_text()))}\n")
            for _ in range(runs):
                context = browser.new_context(viewport={"width": 1280, "height": 900})
                context.add_cookies([{"name": "sessionid", "value": session, "url": origin}])
                page = settled_page(context)
                page.goto(url, timeout=300_000)
                wait_for(page, wait)
                cold = page.evaluate(read)
                if os.environ.get("VIEWER_BENCH_TRACE"):
                    for entry in page.evaluate(TRACE):
                        print(entry)
                assert cold["failed"] == 0, "images failed to load"
                results["visible"].append(cold["visible"])
                results["first"].append(cold["first"])
                for step, at in cold["steps"].items():
                    results.setdefault(f"step_{step}", []).append(at or 0)
                results["stack"].append(cold["stack"])
                results["mb"].append(cold["bytes"] / 1e6)
                if mpr:
                    # MPR from the button (its chunk fetched then) to the three planes drawn
                    # from the whole volume.
                    page.click('[data-action="mpr"]')
                    page.wait_for_function(
                        "() => window.yunyingViewer.viewers[0].mpr?.readyMs != null", timeout=300_000
                    )
                    results.setdefault("mpr", []).append(
                        page.evaluate("() => window.yunyingViewer.viewers[0].mpr.openedInMs")
                    )
                # Again in the same context: the viewer's code from the HTTP cache, the images
                # fetched again (WADO-RS answers are not cached).
                page.goto(url, timeout=300_000)
                wait_for(page, wait)
                warm = page.evaluate(read)
                results["warm_visible"].append(warm["visible"])
                results["warm_first"].append(warm["first"])
                results["warm_stack"].append(warm["stack"])
                context.close()
        finally:
            browser.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only", default="ct512,ct128,dx,us")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument(
        "--storage",
        choices=["local", "s3", "both"],
        default="local",
        help="serve the images from local disk, the object store (moto's S3 server), or both side by side",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="another checkout (a clone of main with its viewer built): served by a second gunicorn from the same "
        "database and images, each case measured on it (before) and on this checkout (after) run by run",
    )
    parser.add_argument(
        "--trace",
        type=Path,
        metavar="DIR",
        help="record one more cold load per case and server as a Chrome trace in DIR (<case>-<server>.json) and "
        "print where the browser's time went until Cornerstone's first frame (bench/viewer/chrometrace.py)",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="another checkout to measure beside the others, alternated with them as --baseline is (repeatable; "
        "its viewer built): candidates of one change side by side",
    )
    args = parser.parse_args()
    variants = checkouts(args.variant)
    if args.variant and not args.baseline:
        sys.exit("--variant goes with --baseline")
    if args.baseline and args.storage != "local":
        sys.exit("--baseline compares two checkouts on local storage")
    cases = args.only.split(",")
    if not (ROOT / "static" / "viewer" / "manifest.json").exists():
        sys.exit("build the viewer first: bash scripts/build-viewer.sh")

    work = Path(tempfile.mkdtemp(prefix="viewer-bench-"))
    env, python, manage = prepare(work)
    started = time.monotonic()
    studies, session = seed(cases)
    print(f"stored {', '.join(studies)} in {time.monotonic() - started:.0f} s")

    backends = ["local", "s3"] if args.storage == "both" else [args.storage]
    envs = {"local": env}
    helpers: list[subprocess.Popen] = []
    if "s3" in backends:
        # moto's S3 server (what the tests use; no S3-compatible server of Debian fits
        # this machine): the images are copied there with storage_copy, so that both
        # backends serve the same studies from the same index, side by side.
        s3_port = free_port()
        helpers.append(
            subprocess.Popen(
                [python, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(s3_port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        wait_port(s3_port)
        s3_env = {
            **env,
            "S3_ENDPOINT_URL": f"http://127.0.0.1:{s3_port}",
            "S3_BUCKET": "viewer-bench",
            "S3_ACCESS_KEY_ID": "bench",
            "S3_SECRET_ACCESS_KEY": "bench",
        }
        import boto3

        boto3.client(
            "s3",
            endpoint_url=s3_env["S3_ENDPOINT_URL"],
            region_name="us-east-1",
            aws_access_key_id="bench",
            aws_secret_access_key="bench",  # noqa: S106 (the emulator's)
        ).create_bucket(Bucket="viewer-bench")
        copy_env = {**s3_env, "STORAGE_BACKEND": "local"}
        subprocess.run([python, manage, "storage_copy", "--to", "s3", "--quiet"], check=True, env=copy_env, cwd=ROOT)
        envs["s3"] = {**s3_env, "STORAGE_BACKEND": "s3"}

    # (label, environment, checkout) of each server.
    served = [(backend, envs[backend], ROOT) for backend in backends]
    if args.baseline:
        baseline = args.baseline.resolve()
        served = [("before", checkout_env(python, env, work, "before", baseline), baseline)]
        for name, checkout in variants.items():
            served.append((name, checkout_env(python, env, work, name, checkout), checkout))
        served.append(("after", env, ROOT))
    servers: dict[str, tuple[subprocess.Popen, int]] = {}
    for label, server_env, checkout in served:
        port = free_port()
        servers[label] = (serve(python, server_env, port, checkout, workers=args.workers), port)
    try:
        for _process, port in servers.values():
            wait_port(port)
        print(f"load average before: {' '.join(f'{value:.1f}' for value in os.getloadavg())} on {os.cpu_count()} CPUs")
        print(f"\nheadless Chromium (SwiftShader WebGL), gunicorn {args.workers}x4 on loopback, medians of {args.runs}")
        print(
            f"{'case':<31}{'visible':>9}{'Cornerstone':>13}{'whole stack':>13}{'MB':>7}"
            f"{'JS cached: visible':>20}{'Cornerstone':>13}{'stack':>9}"
        )
        names = {
            "ct512": "CT 200 x 512x512",
            "ct128": "CT 200 x 128x128",
            "dx": "DX 2736x2736 (15 MB)",
            "us": "US cine 100 x 800x600",
        }
        for case in cases:
            # Each case on each backend in turn, so that a change of the machine's load
            # falls on both alike.
            # With --baseline, run by run (before, after, before, ...): the load of this shared
            # machine changes within a case.
            rounds = args.runs if args.baseline else 1
            results: dict[str, dict[str, list[float]]] = {backend: {} for backend in servers}
            for number in range(rounds):
                for backend, (_process, port) in servers.items():
                    url = f"http://127.0.0.1:{port}/viewer/{studies[case]}/"
                    runs = 1 if args.baseline else args.runs
                    trace = None
                    if args.trace and number == 0:
                        args.trace.mkdir(parents=True, exist_ok=True)
                        trace = args.trace / f"{case}-{backend}.json"
                    result = measure(url, session, runs, mpr=case.startswith("ct"), warmup=number == 0, trace=trace)
                    for key, values in result.items():
                        results[backend].setdefault(key, []).extend(values)
            for backend, result in results.items():
                med = {key: statistics.median(values) for key, values in result.items()}
                label = f"{names[case]} ({backend})" if len(servers) > 1 else names[case]
                print(
                    f"{label:<31}{med['visible']:>7.0f}ms{med['first']:>11.0f}ms{med['stack']:>11.0f}ms"
                    f"{med['mb']:>7.1f}{med['warm_visible']:>18.0f}ms{med['warm_first']:>11.0f}ms"
                    f"{med['warm_stack']:>7.0f}ms"
                )
                if "mpr" in med:
                    print(f"  MPR ready {med['mpr']:.0f} ms after the button (cold chunk, the stack in the cache)")
                steps = [(key.removeprefix("step_"), value) for key, value in med.items() if key.startswith("step_")]
                print("  cold, ms from navigation start: " + ", ".join(f"{name} {at:.0f}" for name, at in steps))
        print(f"load average after: {' '.join(f'{value:.1f}' for value in os.getloadavg())}")
    finally:
        for process in [*(process for process, _port in servers.values()), *helpers]:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def checkouts(given: list[str]) -> dict[str, Path]:
    """{name: checkout} of --variant NAME=DIR arguments."""
    found = {}
    for item in given:
        name, _, directory = item.partition("=")
        if not name or not directory or name in ("before", "after") or name in found:
            sys.exit(f"--variant {item!r}: NAME=DIR, a name of its own (not before or after)")
        found[name] = Path(directory).resolve()
    return found


def checkout_env(python: str, env: dict[str, str], work: Path, name: str, checkout: Path) -> dict[str, str]:
    """`env` for serving another checkout (a baseline, a variant) beside this one: its own
    static files, collected from it under `work`."""
    served_env = {**env, "STATIC_ROOT": str(work / f"static-{name}")}
    subprocess.run(
        [python, str(checkout / "manage.py"), "collectstatic", "--noinput", "-v0"],
        check=True, env=served_env, cwd=checkout,
    )  # fmt: skip
    return served_env


def serve(python: str, env: dict[str, str], port: int, checkout: Path = ROOT, workers: int = 4) -> subprocess.Popen:
    """gunicorn serving `checkout`'s platform on 127.0.0.1:`port` (`workers` x 4 threads),
    as every viewer benchmark serves it."""
    return subprocess.Popen(
        [python, "-m", "gunicorn", "cloudpacs.wsgi:application", "--bind", f"127.0.0.1:{port}",
         "--workers", str(workers), "--threads", "4", "--log-level", "warning", "--chdir", str(checkout)],
        env=env, cwd=checkout,
    )  # fmt: skip


def wait_port(port: int) -> None:
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)


if __name__ == "__main__":
    main()
