#!/usr/bin/env python
"""A single large image on Cornerstone's CPU path or on WebGL: what the move costs and what
reading it costs on each, by the image's size.

Stores one DX per size (a smooth 16-bit pattern, as bench/viewer/run.py's DX), serves them
with gunicorn (4 x 4) on loopback and opens each in /viewer/<study>/ in a fresh browser
context (--runs times). A series of one image stays on the CPU path (pane.js keptOnCpu;
until 2026-12-07 only one larger than 1024 x 1024 did): the page is read there (ten
window changes and ten zoom steps, each from the change to Cornerstone's render event),
then moved to WebGL by the pane's own toGpu (timed), then read again on WebGL. An image
the viewer moves itself (one task after its first image) has its move read from the
pane's marks, then it is read on WebGL. Also the first image and the whole stack (ms
from navigation start). In software WebGL (SwiftShader, as in the other viewer benchmarks),
so WebGL's figures are the CPU's too, on another path.

    bash scripts/build-viewer.sh
    .venv/bin/python bench/viewer/large_image.py [--sizes 512,1024,1280,2048,2736] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # bench/viewer/run.py: prepare, free_port, wait_port

ROOT = run.ROOT

# Ten window changes and ten zoom steps on the first pane, each timed from the change to
# the render event that shows it (the render waits for the next animation frame).
READ = """async (steps) => {
    const pane = window.yunyingViewer.viewers[0].panes[0];
    const rendered = () => new Promise((resolve) =>
        pane.element.addEventListener('CORNERSTONE_IMAGE_RENDERED', resolve, {once: true}));
    const timed = async (change) => {
        const done = rendered();
        const started = performance.now();
        change();
        pane.viewport.render();
        await done;
        return performance.now() - started;
    };
    const viewport = pane.viewport;
    const {voiRange} = viewport.getProperties();
    const windows = [];
    for (let i = 1; i <= steps; i++) {
        windows.push(await timed(() => viewport.setProperties(
            {voiRange: {lower: voiRange.lower + 23 * i, upper: voiRange.upper - 31 * i}})));
    }
    const zooms = [];
    const zoom = viewport.getZoom();
    for (let i = 1; i <= steps; i++) zooms.push(await timed(() => viewport.setZoom(zoom * (1 + 0.05 * i))));
    viewport.setProperties({voiRange});
    viewport.setZoom(zoom);
    const median = (values) => values.sort((a, b) => a - b)[Math.floor(values.length / 2)];
    return {window: median(windows), zoom: median(zooms)};
}"""

STATE = """() => {
    const pane = window.yunyingViewer.viewers[0].panes[0];
    const mark = (name) => performance.getEntriesByName(`yunying:pane0:${name}`, 'mark')[0]?.startTime;
    return {cpu: pane.onCpu, first: pane.firstImageMs, stack: pane.stackMs,
            move: mark('webgl') != null ? mark('webgl') - mark('to-webgl') : null};
}"""

MOVE = """async () => {
    const pane = window.yunyingViewer.viewers[0].panes[0];
    const started = performance.now();
    await pane.toGpu(pane.generation);
    return performance.now() - started;
}"""


def seed(sizes: list[int]) -> tuple[dict[int, str], str]:
    import django

    django.setup()
    import numpy as np
    from django.conf import settings
    from django.test import Client
    from pydicom.uid import DigitalXRayImageStorageForPresentation

    from cloudpacs.services import ingest_instance
    from facilities.models import ExamKind, User
    from tests.factories import make_dataset, make_facility, make_modality, make_user, write_dataset

    township = make_facility("BENCH")
    technologist = make_user(User.Role.TECHNOLOGIST, township, username=f"bench_{os.getpid()}")
    dr = make_modality(township, ExamKind.DR, f"BENCH_DR_{os.getpid() % 1000}")
    files = Path(tempfile.mkdtemp(prefix="viewer-bench-files-"))
    studies = {}
    for size in sizes:
        yy, xx = np.mgrid[0:size, 0:size]
        stored = (2000 + 1500 * np.sin(xx / 200.0) * np.cos(yy / 300.0)).astype(np.uint16)
        ds = make_dataset(sop_class_uid=DigitalXRayImageStorageForPresentation, modality="DX", rows=size, columns=size)
        del ds.RescaleIntercept
        del ds.RescaleSlope
        ds.WindowCenter, ds.WindowWidth = 2000, 3000
        ds.PixelData = stored.tobytes()
        path = write_dataset(ds, files / f"{ds.SOPInstanceUID}.dcm")
        ingest_instance(
            path,
            transfer_syntax_uid=ds.file_meta.TransferSyntaxUID,
            sop_class_uid=ds.SOPClassUID,
            sop_instance_uid=ds.SOPInstanceUID,
            modality=dr,
        )
        path.unlink()
        studies[size] = ds.StudyInstanceUID
    client = Client()
    client.force_login(technologist)
    return studies, client.cookies[settings.SESSION_COOKIE_NAME].value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="512,1024,1280,2048,2736")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    work = Path(tempfile.mkdtemp(prefix="viewer-large-"))
    env, python, _manage = run.prepare(work)
    studies, session = seed(sizes)
    port = run.free_port()
    server = run.serve(python, env, port)
    from playwright.sync_api import sync_playwright

    from tests.browser import launch

    wait = "() => window.yunyingViewer?.viewers[0].panes[0].stackMs != null"
    try:
        run.wait_port(port)
        origin = f"http://127.0.0.1:{port}"
        print(f"load average before: {' '.join(f'{value:.1f}' for value in os.getloadavg())}")
        print(f"headless Chromium (SwiftShader WebGL), medians of {args.runs}; window and zoom: median of 10 steps, ms")
        print(
            f"{'size':>6}{'kept':>6}{'first':>8}{'stack':>8}{'CPU window':>12}{'zoom':>7}"
            f"{'move':>8}{'WebGL window':>14}{'zoom':>7}"
        )
        with sync_playwright() as playwright:
            browser = launch(playwright)
            for size in sizes:
                url = f"{origin}/viewer/{studies[size]}/"
                rows: dict[str, list[float]] = {}
                kept = False
                for number in range(args.runs + 1):
                    context = browser.new_context(viewport={"width": 1280, "height": 900})
                    context.add_cookies([{"name": "sessionid", "value": session, "url": origin}])
                    page = context.new_page()
                    page.goto(url, timeout=300_000)
                    page.wait_for_function(wait, timeout=300_000)
                    page.evaluate("() => window.yunyingViewer.viewers[0].toolsReady.then(() => true)")
                    state = page.evaluate(STATE)
                    cpu = page.evaluate(READ, 10) if state["cpu"] else None
                    move = page.evaluate(MOVE) if state["cpu"] else state["move"]
                    gpu = page.evaluate(READ, 10)
                    context.close()
                    if number == 0:
                        continue  # the server's first answers for this study, not counted
                    kept = bool(state["cpu"])
                    values = {
                        "first": state["first"],
                        "stack": state["stack"],
                        "cpu_window": cpu["window"] if cpu else None,
                        "cpu_zoom": cpu["zoom"] if cpu else None,
                        "move": move,
                        "gpu_window": gpu["window"],
                        "gpu_zoom": gpu["zoom"],
                    }
                    for key, value in values.items():
                        if value is not None:
                            rows.setdefault(key, []).append(value)

                def med(key: str, rows: dict[str, list[float]] = rows) -> str:
                    return f"{statistics.median(rows[key]):.0f}" if key in rows else "-"

                print(
                    f"{size:>6}{'yes' if kept else 'no':>6}{med('first'):>8}{med('stack'):>8}{med('cpu_window'):>12}"
                    f"{med('cpu_zoom'):>7}{med('move'):>8}{med('gpu_window'):>14}{med('gpu_zoom'):>7}"
                )
            browser.close()
        print(f"load average after: {' '.join(f'{value:.1f}' for value in os.getloadavg())}")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
