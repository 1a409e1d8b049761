#!/usr/bin/env python
"""Single images of each photometric interpretation kept on Cornerstone's CPU path, against
the move to WebGL the viewer made for them before (a single image of at most 1024 x 1024).

Stores one image per case (an ultrasound still in RGB and in YBR_FULL_422 JPEG, 800 x 600;
a PALETTE COLOR still with 8-bit LUT entries, 640 x 480; an MR slice alone in its series,
512 x 512; a MONOCHROME1 CR, 2048 x 2048), serves them with gunicorn (4 x 4) on loopback and
opens each in /viewer/<study>/ in a fresh browser context (--runs times, after one not
counted). For each load: Cornerstone's first frame and the whole stack (ms from navigation
start, the page's own marks), whether the pane stayed on the CPU, the render windows' WebGL
contexts made, and the CPU time of the browser's processes (renderer, GPU process, all;
from /proc/PID/stat, which holds under load) from the navigation to the stack reported.
Then, in the same page, the move the viewer no longer makes (the pane's own toGpu, as
before): its time, its CPU time by process and the contexts after it. Both sides are
measured in each run, so the ratio stands beside its reference.

    bash scripts/build-viewer.sh
    .venv/bin/python bench/viewer/single_image.py [--runs 3] [--only us-rgb,us-jpeg,palette8,mr,cr]
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
TICKS = os.sysconf("SC_CLK_TCK")

# Counts the WebGL contexts the render windows create (as tests/test_viewer_browser.py).
COUNT_WEBGL_CONTEXTS = """(() => {
    const contexts = new Set();
    const getContext = HTMLCanvasElement.prototype.getContext;
    HTMLCanvasElement.prototype.getContext = function (type, ...rest) {
        const context = getContext.call(this, type, ...rest);
        if (context && /webgl/.test(type) && /get3DContext/.test(new Error().stack)) contexts.add(context);
        return context;
    };
    window.renderWindowContexts = () => contexts.size;
})()"""

STATE = """() => {
    const pane = window.yunyingViewer.viewers[0].panes[0];
    return {cpu: pane.onCpu, first: pane.firstImageMs, stack: pane.stackMs, contexts: window.renderWindowContexts()};
}"""

MOVE = """async () => {
    const pane = window.yunyingViewer.viewers[0].panes[0];
    if (!pane.onCpu) return null;
    const started = performance.now();
    await pane.toGpu(pane.generation);
    return {ms: performance.now() - started, contexts: window.renderWindowContexts()};
}"""


def browser_cpu() -> dict[str, float]:
    """CPU seconds so far of this process's Chromium descendants, by kind."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    totals = {"renderer": 0.0, "gpu": 0.0, "all": 0.0}
    stack = [os.getpid()]
    while stack:
        pid = stack.pop()
        stack.extend(children.get(pid, []))
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if "chrom" not in command:
            continue
        seconds = (int(fields[11]) + int(fields[12])) / TICKS
        totals["all"] += seconds
        if "--type=renderer" in command:
            totals["renderer"] += seconds
        elif "--type=gpu-process" in command:
            totals["gpu"] += seconds
    return totals


def spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {kind: 1000 * (after[kind] - before[kind]) for kind in before}


def seed(cases: list[str]) -> tuple[dict[str, str], str]:
    import django

    django.setup()
    import numpy as np
    from django.conf import settings
    from django.test import Client
    from pydicom.encaps import encapsulate
    from pydicom.uid import ComputedRadiographyImageStorage, MRImageStorage

    from cloudpacs.services import ingest_instance
    from facilities.models import ExamKind, User
    from tests import equipment
    from tests.factories import make_dataset, make_facility, make_modality, make_user, write_dataset

    township = make_facility("BENCH")
    technologist = make_user(User.Role.TECHNOLOGIST, township, username=f"bench_{os.getpid()}")
    console = make_modality(township, ExamKind.DR, f"BENCH_DR_{os.getpid() % 1000}")
    files = Path(tempfile.mkdtemp(prefix="viewer-single-files-"))

    def smooth(rows: int, columns: int) -> np.ndarray:
        yy, xx = np.mgrid[0:rows, 0:columns]
        return 0.5 + 0.5 * np.sin(xx / 37.0) * np.cos(yy / 53.0)

    def photo(rows: int, columns: int) -> np.ndarray:
        shade = smooth(rows, columns)
        return np.stack([shade * 220, (1 - shade) * 180, shade * 90 + 40], axis=-1).astype(np.uint8)

    def build(case: str):
        if case == "us-rgb":
            ds = equipment.us_single_rgb(600, 800)
            ds.PixelData = photo(600, 800).tobytes()
        elif case == "us-jpeg":
            ds = equipment.us_ybr_full_422_jpeg(frames=1, rows=600, columns=800)
            ds.PixelData = encapsulate([equipment.jpeg(photo(600, 800))])
            equipment.encapsulated(ds)
        elif case == "palette8":
            ds = equipment.us_palette(480, 640)
            ds.PixelData = (smooth(480, 640) * 255).astype(np.uint8).tobytes()
            ramp = np.arange(256)
            for channel, lut in (("Red", ramp), ("Green", 255 - ramp), ("Blue", (ramp * 3) % 256)):
                setattr(ds, f"{channel}PaletteColorLookupTableDescriptor", [256, 0, 8])
                ds[f"{channel}PaletteColorLookupTableData"].value = lut.astype(np.uint8).tobytes()
        elif case == "mr":
            ds = make_dataset(sop_class_uid=MRImageStorage, modality="MR", rows=512, columns=512)
            ds.PixelData = (smooth(512, 512) * 1500 + 1100).astype(np.uint16).tobytes()
            ds.WindowCenter, ds.WindowWidth = 1100, 1600
        else:
            ds = make_dataset(sop_class_uid=ComputedRadiographyImageStorage, modality="CR", rows=2048, columns=2048)
            del ds.RescaleIntercept
            del ds.RescaleSlope
            ds.PhotometricInterpretation = "MONOCHROME1"
            ds.PixelData = (smooth(2048, 2048) * 3000 + 500).astype(np.uint16).tobytes()
            ds.WindowCenter, ds.WindowWidth = 2000, 3000
        return ds

    studies = {}
    for case in cases:
        ds = build(case)
        path = write_dataset(ds, files / f"{ds.SOPInstanceUID}.dcm")
        ingest_instance(
            path,
            transfer_syntax_uid=ds.file_meta.TransferSyntaxUID,
            sop_class_uid=ds.SOPClassUID,
            sop_instance_uid=ds.SOPInstanceUID,
            modality=console,
        )
        path.unlink()
        studies[case] = ds.StudyInstanceUID
    client = Client()
    client.force_login(technologist)
    return studies, client.cookies[settings.SESSION_COOKIE_NAME].value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="us-rgb,us-jpeg,palette8,mr,cr")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    cases = args.only.split(",")
    work = Path(tempfile.mkdtemp(prefix="viewer-single-"))
    env, python, _manage = run.prepare(work)
    studies, session = seed(cases)
    port = run.free_port()
    server = run.serve(python, env, port)
    from playwright.sync_api import sync_playwright

    from tests.browser import launch

    wait = "() => window.yunyingViewer?.viewers[0].panes[0].stackMs != null"
    try:
        run.wait_port(port)
        origin = f"http://127.0.0.1:{port}"
        print(f"load average before: {' '.join(f'{value:.1f}' for value in os.getloadavg())}")
        print(f"headless Chromium (SwiftShader WebGL), cold loads, medians of {args.runs}; ms")
        print(
            f"{'case':>9}{'kept':>6}{'first':>7}{'stack':>7}{'ctx':>5}{'CPU rend':>10}{'gpu':>6}{'all':>6}"
            f" | {'move':>6}{'ctx':>5}{'CPU rend':>10}{'gpu':>6}{'all':>6}"
        )
        with sync_playwright() as playwright:
            browser = launch(playwright)
            for case in cases:
                url = f"{origin}/viewer/{studies[case]}/"
                rows: dict[str, list[float]] = {}
                kept = False
                for number in range(args.runs + 1):
                    context = browser.new_context(viewport={"width": 1280, "height": 900})
                    context.add_cookies([{"name": "sessionid", "value": session, "url": origin}])
                    context.add_init_script(COUNT_WEBGL_CONTEXTS)
                    page = context.new_page()
                    # The new window's own start is not the page's (run.py's settled_page).
                    page.goto("about:blank")
                    page.wait_for_timeout(500)
                    start = browser_cpu()
                    page.goto(url, timeout=300_000)
                    page.wait_for_function(wait, timeout=300_000)
                    loaded = browser_cpu()
                    state = page.evaluate(STATE)
                    moved = page.evaluate(MOVE)
                    after = browser_cpu()
                    context.close()
                    if number == 0:
                        continue  # the server's first answers for this study, not counted
                    kept = bool(state["cpu"])
                    load = spent(start, loaded)
                    values = {
                        "first": state["first"],
                        "stack": state["stack"],
                        "contexts": state["contexts"],
                        "renderer": load["renderer"],
                        "gpu": load["gpu"],
                        "all": load["all"],
                    }
                    if moved:
                        move = spent(loaded, after)
                        values.update(
                            move=moved["ms"],
                            move_contexts=moved["contexts"],
                            move_renderer=move["renderer"],
                            move_gpu=move["gpu"],
                            move_all=move["all"],
                        )
                    for key, value in values.items():
                        rows.setdefault(key, []).append(value)

                def med(key: str, rows: dict[str, list[float]] = rows) -> str:
                    return f"{statistics.median(rows[key]):.0f}" if key in rows else "-"

                print(
                    f"{case:>9}{'yes' if kept else 'no':>6}{med('first'):>7}{med('stack'):>7}{med('contexts'):>5}"
                    f"{med('renderer'):>10}{med('gpu'):>6}{med('all'):>6}"
                    f" | {med('move'):>6}{med('move_contexts'):>5}{med('move_renderer'):>10}"
                    f"{med('move_gpu'):>6}{med('move_all'):>6}"
                )
            browser.close()
        print(f"load average after: {' '.join(f'{value:.1f}' for value in os.getloadavg())}")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
