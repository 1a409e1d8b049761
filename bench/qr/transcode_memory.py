#!/usr/bin/env python
"""Peak memory of decompressing a large multi-frame instance for a C-MOVE or C-GET peer
that takes only uncompressed syntaxes (cloudpacs.transcoding), beside pydicom's own
`Dataset.decompress` and beside sending the same pixels stored uncompressed.

Each variant runs in a process of its own that loads what the receiver loads (Django,
pynetdicom, the decoders), reads the object from a file, makes it sendable and encodes
the C-STORE data set as pynetdicom does (`pynetdicom.dsutils.encode`, one copy in memory);
the process's peak resident set (VmHWM) is printed, with the same process's after
loading only ("loaded"). "stored uncompressed" reads the uncompressed file whole (as
the retrieve SCP did before it streamed Pixel Data), "read_instance" as it does now.

    DJANGO_SETTINGS_MODULE=cloudpacs.settings .venv/bin/python bench/qr/transcode_memory.py --frames 180

The object: `--frames` frames of a 512 x 512 16-bit CT-like image, RLE Lossless (the
same compressed frame repeated; each is decoded on its own all the same).
"""

from __future__ import annotations

import argparse
import copy
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

VARIANTS = (
    "loaded",
    "stored uncompressed",
    "stored uncompressed, read_instance",
    "pydicom decompress",
    "cloudpacs.transcoding",
)


def build(directory: Path, frames: int) -> tuple[Path, Path]:
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate, generate_frames
    from pydicom.pixels.utils import compress
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, RLELossless, generate_uid

    rows = columns = 512
    y, x = np.mgrid[0:rows, 0:columns]
    rng = np.random.default_rng(1)
    image = ((np.hypot(y - 256, x - 256) < 200) * 1000 + rng.integers(0, 40, (rows, columns))).astype("<u2")
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, columns, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.NumberOfFrames = 1
    ds.PixelData = image.tobytes()
    one = copy.deepcopy(ds)
    compress(one, RLELossless)

    frame = next(generate_frames(one.PixelData, number_of_frames=1))
    ds.NumberOfFrames = frames
    native = directory / "native.dcm"
    ds.PixelData = image.tobytes() * frames
    ds.save_as(native, enforce_file_format=True)
    ds.file_meta.TransferSyntaxUID = RLELossless
    ds.PixelData = encapsulate([frame] * frames)
    compressed = directory / "rle.dcm"
    ds.save_as(compressed, enforce_file_format=True)
    return native, compressed


def measure(variant: str, native: str, compressed: str) -> None:
    import django

    django.setup()
    from pydicom import dcmread
    from pynetdicom.dsutils import encode

    import dicomnode.queryretrieve  # noqa: F401  what the receiver loads
    from cloudpacs import queryretrieve, storage, transcoding

    loaded = high_water_mark()
    size = 0
    if variant == "stored uncompressed":
        ds = dcmread(native)
        size = len(encode(ds, False, True))
    elif variant == "stored uncompressed, read_instance":
        # As the retrieve SCP reads it (the Pixel Data streamed from the file).
        storage.open_key = lambda key: open(key, "rb")  # type: ignore[assignment]  # noqa: SIM115
        item = queryretrieve.RetrieveItem("", "", "1.2.840.10008.1.2.1", native, 0)
        ds = queryretrieve.read_instance(item)
        size = len(encode(ds, False, True))
    elif variant == "pydicom decompress":
        ds = dcmread(compressed)
        ds.decompress(generate_instance_uid=False)
        size = len(encode(ds, False, True))
    elif variant == "cloudpacs.transcoding":
        ds = dcmread(compressed)
        transcoding.decompress(ds, limit=2**32)
        size = len(encode(ds, False, True))
    peak = high_water_mark()
    print(f"{variant:36} loaded {loaded / 1024:6.0f} MB  peak {peak / 1024:6.0f} MB  message {size / 2**20:6.1f} MB")


def high_water_mark() -> int:
    """The process's peak resident set in KB (VmHWM: ru_maxrss outlives exec, and would
    give the parent's, which built the objects)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=180)
    parser.add_argument("--measure", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure(*args.measure)
        return
    with tempfile.TemporaryDirectory() as directory:
        native, compressed = build(Path(directory), args.frames)
        megabytes = [path.stat().st_size / 2**20 for path in (native, compressed)]
        sizes = f"{megabytes[0]:.1f} MB stored uncompressed, {megabytes[1]:.1f} MB RLE"
        print(f"{args.frames} frames 512 x 512 16-bit: {sizes}; load {os.getloadavg()[0]:.1f}")
        for variant in VARIANTS:
            command = [sys.executable, __file__, "--measure", variant, str(native), str(compressed)]
            subprocess.run(command, check=True)
        print(f"load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
