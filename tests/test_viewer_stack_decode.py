"""A CT stack's batched frames as the viewer reads them, run in Node: the parts of a
multipart answer (frontend/src/dicomweb.js) are read in place, as views into the body, and
decoded on the page's thread (frontend/src/decodehere.js) into the values the image loader
would make; the image loader's setPixelDataType, as the build has it
(frontend/src/stubs/set-pixel-data-type.js), keeps a decoded frame already in its typed
array instead of copying it."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
from django.conf import settings

SOURCES = Path(settings.BASE_DIR) / "frontend" / "src"

# Reads {body (hex), boundary, rows, columns} on stdin; prints, per part, whether its data is
# a view into the body, and the decoded values, their array's type and their range; and
# whether setPixelDataType kept the decoded array.
RUNNER = """
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
const src = process.argv[1];
const { multipartParts } = await import(pathToFileURL(`${src}/dicomweb.js`).href);
const { decodeHere } = await import(pathToFileURL(`${src}/decodehere.js`).href);
const { default: setPixelDataType } = await import(pathToFileURL(`${src}/stubs/set-pixel-data-type.js`).href);
const { body, boundary, rows, columns } = JSON.parse(readFileSync(0, 'utf8'));
const bytes = Uint8Array.from(Buffer.from(body, 'hex'));
const getMinMax = (values) => {
  let min = Infinity, max = -Infinity;
  for (const v of values) { if (v < min) min = v; if (v > max) max = v; }
  return { min, max };
};
const out = multipartParts(bytes, boundary).map((part) => {
  const imageFrame = { bitsAllocated: 16, bitsStored: 12, pixelRepresentation: 0, samplesPerPixel: 1,
                       photometricInterpretation: 'MONOCHROME2', rows, columns };
  const options = { preScale: { enabled: true, scalingParameters: { rescaleSlope: 1, rescaleIntercept: -1024,
                                                                    modality: 'CT' } } };
  const decoded = decodeHere({ imageFrame, transferSyntax: '1.2.840.10008.1.2.1', pixelData: part.data, options },
                             getMinMax);
  const values = decoded.pixelData;
  setPixelDataType(decoded);
  return { view: part.data.buffer === bytes.buffer, location: part.headers['content-location'],
           type: values.constructor.name, kept: decoded.pixelData === values, values: Array.from(values),
           min: decoded.smallestPixelValue, max: decoded.largestPixelValue };
});
console.log(JSON.stringify(out));
"""


def run_in_node(body: bytes, boundary: str, rows: int, columns: int) -> list[dict]:
    node = shutil.which("node")
    assert node, "Node.js is needed to build and test the viewer (see the README)"
    result = subprocess.run(
        [node, "--input-type=module", "-e", RUNNER, str(SOURCES)],
        input=json.dumps({"body": body.hex(), "boundary": boundary, "rows": rows, "columns": columns}),
        capture_output=True,
        text=True,
        check=True,
        cwd=SOURCES.parent,
    )
    return json.loads(result.stdout)


def test_a_batchs_frames_are_decoded_in_place_and_kept_in_their_array() -> None:
    from cloudpacs.dicomweb import multipart

    rows, columns = 8, 6
    rng = np.random.default_rng(3)
    slices = [rng.integers(0, 4096, (rows, columns), dtype=np.uint16) for _ in range(3)]
    # Locations of different lengths, so that the parts' pixel data start at odd and even
    # offsets in the body.
    parts = [
        multipart.OutPart(
            "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1",
            data=stored.astype("<u2").tobytes(),
            location=f"/instances/1.2.{'9' * number}/frames/1",
            length=stored.nbytes,
        )
        for number, stored in enumerate(slices, start=1)
    ]
    boundary = multipart.new_boundary()
    decoded = run_in_node(multipart.encode(parts, boundary), boundary, rows, columns)
    assert [part["location"] for part in decoded] == [part.location for part in parts]
    for part, stored in zip(decoded, slices, strict=True):
        hounsfield = stored.astype(int) - 1024
        assert part["view"] is True
        assert part["values"] == hounsfield.ravel().tolist()
        assert (part["min"], part["max"]) == (hounsfield.min(), hounsfield.max())
        assert part["type"] == "Int16Array"
        assert part["kept"] is True
