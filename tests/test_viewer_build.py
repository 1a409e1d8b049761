"""The built viewer (bash scripts/build-viewer.sh): what its entry holds and what it leaves
to the chunks, and the manifest the pages find it by."""

from __future__ import annotations

import json

import pytest

from tests.browser import BUILT_VIEWER

VIEWER = BUILT_VIEWER.parent


@pytest.fixture(scope="module")
def manifest() -> dict:
    assert BUILT_VIEWER.exists(), "the viewer is not built: run scripts/build-viewer.sh"
    return json.loads(BUILT_VIEWER.read_text())


def test_the_entry_and_its_styles_are_named_by_their_content(manifest):
    entry = manifest["src/main.js"]
    assert entry["isEntry"]
    assert entry["file"].startswith("viewer-") and entry["file"].endswith(".js")
    assert (VIEWER / entry["file"]).exists()
    assert [css for css in entry["css"] if css.startswith("viewer-") and (VIEWER / css).exists()] == entry["css"]
    # The entry is found by the manifest only: no copy under a fixed name is left to go stale.
    assert not (VIEWER / "viewer.js").exists()


def test_the_entry_leaves_dcmjs_out(manifest):
    entry = (VIEWER / manifest["src/main.js"]["file"]).read_text()
    # dcmjs's packed dictionary of every keyword (a DIMSE command's among them), its DICOM
    # writer and its Part 10 reader: none of them is in the entry (src/stubs/dcmjs.js).
    for dcmjs in ("RETIRED_CommandLengthToEnd", "DicomMessage", "datasetToBlob"):
        assert dcmjs not in entry
    # What the stub serves in their place: the dictionary entries Cornerstone's metadata reads.
    # (the minifier quotes its strings with backticks).
    assert '"00280030","DS","2","PixelSpacing"' in entry.replace("`", '"')
    assert manifest["src/tools.js"]["isDynamicEntry"]


def test_the_entry_leaves_out_the_viewport_types_the_viewer_never_makes(manifest):
    entry = (VIEWER / manifest["src/main.js"]["file"]).read_text()
    # Cornerstone's video, ECG, whole-slide and "generic" planar viewports (src/stubs/viewport-types.js):
    # neither their code nor their messages are in the entry.
    for text in ("Video not ready yet", "Method not implemented for ECG viewport", "PlanarViewport", "WSIViewport"):
        assert text not in entry
    # The stack and volume viewports are: the stub's table names them.
    assert "Unknown viewport type" in entry
