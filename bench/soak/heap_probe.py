"""Run `manage.py` with a probe of its Python heap, for the soak test's --heap-probe.

On SIGUSR1 the process collects garbage and appends one line to the file named by
SOAK_HEAP_PROBE: the number of objects the garbage collector tracks and the number of
blocks pymalloc has allocated. Both stay level when nothing accumulates in Python, so a
resident memory that grows while they do not is the C allocator's (arenas, fragmentation),
not a leak of objects.

    python bench/soak/heap_probe.py dicomnode --port 11112
"""

from __future__ import annotations

import gc
import os
import runpy
import signal
import sys
from pathlib import Path
from types import FrameType

BASE_DIR = Path(__file__).resolve().parents[2]


def probe(signum: int, frame: FrameType | None) -> None:
    gc.collect()
    with open(os.environ["SOAK_HEAP_PROBE"], "a") as out:
        out.write(f"{len(gc.get_objects())} {sys.getallocatedblocks()}\n")


if __name__ == "__main__":
    signal.signal(signal.SIGUSR1, probe)
    # As `python manage.py` would: the project first on the path, then the command line.
    sys.path.insert(0, str(BASE_DIR))
    sys.argv = [str(BASE_DIR / "manage.py"), *sys.argv[1:]]
    runpy.run_path(str(BASE_DIR / "manage.py"), run_name="__main__")
