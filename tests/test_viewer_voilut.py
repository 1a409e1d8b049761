"""The viewer's VOI LUT (frontend/src/voilut.js), run in Node, gives the same values as
pydicom's apply_voi_lut for the LUT shapes DX and CR files carry."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import apply_voi_lut
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

VOILUT_MODULE = Path(settings.BASE_DIR) / "frontend" / "src" / "voilut.js"

# Reads {instance, values} on stdin, prints the mapped values and what was read of the LUT.
RUNNER = """
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
const { readVoiLut, applyVoiLut } = await import(pathToFileURL(process.argv[1]).href);
const { instance, values } = JSON.parse(readFileSync(0, 'utf8'));
const lut = await readVoiLut(instance);
console.log(JSON.stringify({ mapped: Array.from(applyVoiLut(values, lut)), maxOutput: lut.maxOutput,
                             firstMapped: lut.firstMapped }));
"""


def run_in_node(instance: dict, values: np.ndarray) -> dict:
    node = shutil.which("node")
    assert node, "Node.js is needed to build and test the viewer (see the README)"
    result = subprocess.run(
        [node, "--input-type=module", "-e", RUNNER, str(VOILUT_MODULE)],
        input=json.dumps({"instance": instance, "values": values.ravel().tolist()}),
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout)


def dataset_with_lut(table: np.ndarray, first_mapped: int, bits: int, signed: bool = False) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.PixelRepresentation = 1 if signed else 0
    item = Dataset()
    item.add_new("LUTDescriptor", "SS" if first_mapped < 0 else "US", [len(table) % 65536, first_mapped, bits])
    item.add_new("LUTData", "OW", table.astype("<u2").tobytes())
    ds.VOILUTSequence = Sequence([item])
    return ds


def as_json(table: np.ndarray, descriptor: list[int], form: str, signed: bool = False) -> dict:
    """The instance as DICOM JSON, with the LUT data inline (base64) or as a value list."""
    data = (
        {"vr": "OW", "InlineBinary": base64.b64encode(table.astype("<u2").tobytes()).decode()}
        if form == "inline"
        else {"vr": "US", "Value": table.tolist()}
    )
    item = {"00283002": {"vr": "US", "Value": descriptor}, "00283006": data}
    return {"00280103": {"vr": "US", "Value": [1 if signed else 0]}, "00283010": {"vr": "SQ", "Value": [item]}}


@pytest.mark.parametrize("form", ["inline", "values"])
def test_a_full_12_bit_lut_maps_every_value_as_pydicom_does(form):
    table = (65535 * (np.arange(4096) / 4095) ** 0.6).astype(np.uint16)
    values = np.arange(0, 4096, dtype=np.uint16)
    expected = apply_voi_lut(values, dataset_with_lut(table, 0, 16))
    result = run_in_node(as_json(table, [4096, 0, 16], form), values)
    assert result["mapped"] == expected.tolist()
    assert result["maxOutput"] == 65535


def test_values_outside_a_short_lut_take_its_first_and_last_entries():
    table = np.linspace(100, 3000, 500).astype(np.uint16)
    values = np.array([0, 999, 1000, 1001, 1250, 1499, 1500, 4095], dtype=np.uint16)
    expected = apply_voi_lut(values, dataset_with_lut(table, 1000, 12))
    result = run_in_node(as_json(table, [500, 1000, 12], "values"), values)
    assert result["mapped"] == expected.tolist()
    assert result["mapped"][0] == 100
    assert result["mapped"][-1] == 3000
    assert result["maxOutput"] == 4095


def test_a_signed_images_first_mapped_value_read_as_unsigned_is_taken_as_negative():
    table = np.linspace(0, 65535, 2048).astype(np.uint16)
    values = np.array([-2000, -1024, -1, 0, 500, 1023, 3000], dtype=np.int16)
    expected = apply_voi_lut(values, dataset_with_lut(table, -1024, 16, signed=True))
    # As a server that keeps the descriptor as US writes it: -1024 is 64512.
    result = run_in_node(as_json(table, [2048, 64512, 16], "inline", signed=True), values)
    assert result["firstMapped"] == -1024
    assert result["mapped"] == expected.tolist()
    assert result["maxOutput"] == 65535


def test_a_descriptor_that_understates_its_entries_depth_is_widened():
    table = np.linspace(0, 65535, 256).astype(np.uint16)
    result = run_in_node(as_json(table, [256, 0, 12], "values"), np.array([0, 255]))
    assert result["maxOutput"] == 65535
