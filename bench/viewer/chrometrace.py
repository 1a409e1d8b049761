"""Where the browser's time goes before Cornerstone's first frame, from a Chrome trace.

bench/viewer/run.py --trace DIR records one extra cold load per case (not counted in the
medians: tracing and the sampling profiler slow the page) and prints what this module
reads from it: for the page's main thread, the worker threads and the GPU process, the
time each was busy between navigation start and the viewer's `yunying:pane0:first` mark,
the trace's own events by self time (compiling, evaluating, parsing HTML, layout, GC) and
the sampling profiler's JavaScript functions by self time, with the script they are in.
The trace file itself opens in Chrome's performance panel or https://ui.perfetto.dev.

    .venv/bin/python bench/viewer/chrometrace.py DIR/ct512-local.json
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

CATEGORIES = [
    "devtools.timeline",
    "disabled-by-default-devtools.timeline",
    "blink.user_timing",
    "v8.execute",
    "v8",
    "loading",
    "toplevel",
    "disabled-by-default-v8.cpu_profiler",
]
FIRST_MARK = "yunying:pane0:first"
# Events that only wrap others (their time is their children's, or the thread's idling).
WRAPPERS = {
    "ThreadControllerImpl::RunTask",
    "RunTask",
    "TaskQueueManager::ProcessTaskFromWorkQueue",
    "MessageLoop::RunTask",
    "ThreadPool_RunTask",
}


def _events(trace: Any) -> list[dict[str, Any]]:
    return trace["traceEvents"] if isinstance(trace, dict) else trace


def window(events: list[dict[str, Any]]) -> tuple[int, float, float]:
    """The page's renderer process, and navigation start and the first frame (us)."""
    first = next(e for e in events if e.get("name") == FIRST_MARK)
    pid = first["pid"]
    starts = [
        e["ts"]
        for e in events
        if e.get("name") == "navigationStart"
        and e["pid"] == pid
        and "/viewer/" in str(e.get("args", {}).get("data", {}).get("documentLoaderURL", ""))
    ]
    nav = max((ts for ts in starts if ts <= first["ts"]), default=min(e["ts"] for e in events if e["pid"] == pid))
    return pid, nav, first["ts"]


def thread_names(events: list[dict[str, Any]]) -> dict[tuple[int, int], str]:
    names = {}
    for e in events:
        if e.get("ph") == "M" and e.get("name") == "thread_name":
            names[(e["pid"], e["tid"])] = e["args"]["name"]
    return names


def self_times(events: list[dict[str, Any]], start: float, end: float) -> dict[tuple[int, int], dict[str, float]]:
    """Per thread, the complete events' self time by name (ms), for events beginning in
    [start, end]; wrappers not counted."""
    by_thread: dict[tuple[int, int], list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        if e.get("ph") == "X" and "dur" in e and start <= e["ts"] <= end:
            by_thread[(e["pid"], e["tid"])].append(e)
    result: dict[tuple[int, int], dict[str, float]] = {}
    for key, items in by_thread.items():
        items.sort(key=lambda e: (e["ts"], -e["dur"]))
        totals: dict[str, float] = defaultdict(float)
        stack: list[list[Any]] = []  # [end, name, children's time, duration]
        for e in items:
            while stack and stack[-1][0] <= e["ts"]:
                done = stack.pop()
                totals[done[1]] += done[3] - done[2]
            if stack:
                stack[-1][2] += e["dur"]
            stack.append([e["ts"] + e["dur"], e["name"], 0.0, e["dur"]])
        while stack:
            done = stack.pop()
            totals[done[1]] += done[3] - done[2]
        result[key] = {name: us / 1000 for name, us in totals.items() if name not in WRAPPERS}
    return result


Samples = dict[tuple[int, int], dict[tuple[str, str], float]]


def profiles(events: list[dict[str, Any]], start: float, end: float) -> Samples:
    """Per thread, the sampling profiler's self time (ms) by (function, script) in [start, end]."""
    heads: dict[tuple[int, str], dict[str, Any]] = {}
    for e in events:
        if e.get("ph") == "P" and e.get("name") == "Profile":
            heads[(e["pid"], e["id"])] = {
                "thread": (e["pid"], e["tid"]),
                "t": e["args"]["data"]["startTime"],
                "nodes": {},
                "last": None,
                "totals": defaultdict(float),
            }
    for e in sorted((e for e in events if e.get("name") == "ProfileChunk"), key=lambda e: e["ts"]):
        head = heads.get((e["pid"], e["id"]))
        if head is None:
            continue
        data = e["args"]["data"]
        profile = data.get("cpuProfile", {})
        for node in profile.get("nodes", []):
            frame = node.get("callFrame", {})
            url = frame.get("url", "")
            head["nodes"][node["id"]] = (frame.get("functionName") or "(anonymous)", url.rsplit("/", 1)[-1][:40])
        for node_id, delta in zip(profile.get("samples", []), data.get("timeDeltas", []), strict=False):
            # A sample's time is the gap to the one before it, given to the earlier one.
            if head["last"] is not None and start <= head["t"] <= end:
                head["totals"][head["nodes"].get(head["last"], ("?", ""))] += delta / 1000
            head["t"] += delta
            head["last"] = node_id
    result: Samples = defaultdict(lambda: defaultdict(float))
    for head in heads.values():
        for key, ms in head["totals"].items():
            result[head["thread"]][key] += ms
    return result


def summary(trace: Any, top: int = 12) -> str:
    events = _events(trace)
    pid, nav, first = window(events)
    names = thread_names(events)
    lines = [f"first frame at {(first - nav) / 1000:.0f} ms after navigation start (traced: slower than untraced)"]
    busy = self_times(events, nav, first)
    samples = profiles(events, nav, first)

    def label(key: tuple[int, int]) -> str:
        where = "page" if key[0] == pid else f"pid {key[0]}"
        return f"{names.get(key, 'thread')} ({where})"

    interesting = sorted(
        (key for key in busy if key[0] == pid or "Gpu" in names.get(key, "") or "Viz" in names.get(key, "")),
        key=lambda key: -sum(busy[key].values()),
    )
    for key in interesting[:5]:
        total = sum(busy[key].values())
        if total < 5:
            continue
        lines.append(f"\n{label(key)}: {total:.0f} ms of trace events' self time")
        for name, ms in sorted(busy[key].items(), key=lambda item: -item[1])[:top]:
            lines.append(f"  {ms:8.1f} ms  {name}")
        if key in samples:
            by_script: dict[str, float] = defaultdict(float)
            for (_function, script), ms in samples[key].items():
                by_script[script or "(native)"] += ms
            lines.append(f"  JavaScript samples by script: {sum(by_script.values()):.0f} ms")
            for script, ms in sorted(by_script.items(), key=lambda item: -item[1])[:8]:
                lines.append(f"    {ms:8.1f} ms  {script}")
            lines.append("  by function:")
            for (function, script), ms in sorted(samples[key].items(), key=lambda item: -item[1])[:top]:
                lines.append(f"    {ms:8.1f} ms  {function}  {script}")
    return "\n".join(lines)


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print(arg)
        print(summary(json.loads(Path(arg).read_text())))
