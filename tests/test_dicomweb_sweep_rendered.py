"""Every sweep file (pydicom's test and character set files, pydicom-data's) through
STOW-RS, then its metadata, rendered image, thumbnail and first frame over WADO-RS: each
answer is what was asked for or a client error with its reason, never a server error; and
an image pydicom decodes here is rendered, at its own size."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import pytest
from PIL import Image
from pydicom import dcmread

from tests.test_dicomweb_vendor_files import api, instance_url, stow  # noqa: F401
from tests.test_sweep_from_outside import sweep_files

pytestmark = pytest.mark.django_db


def decodes_here(path: Path) -> bool:
    try:
        ds = dcmread(path)
        return "PixelData" in ds and ds.pixel_array.size > 0
    except Exception:
        return False


@pytest.mark.parametrize("path", sweep_files(), ids=lambda path: path.name)
def test_a_swept_file_is_stored_or_refused_and_rendered_or_refused_never_a_server_error(api, path: Path):  # noqa: F811
    response = stow(api, path.read_bytes())
    assert response.status_code < 500, response.content[:500]
    if response.status_code != 200:
        return
    ds = dcmread(path, stop_before_pixels=True)
    url = instance_url(str(ds.SOPInstanceUID))
    assert api.get(url + "/metadata").status_code == 200
    answers = {}
    for ask, accept in (("/rendered", "image/png"), ("/thumbnail", "image/jpeg"), ("/frames/1", "*/*")):
        answer = api.get(url + ask, HTTP_ACCEPT=accept)
        body = b"".join(answer.streaming_content) if answer.streaming else answer.content
        assert answer.status_code < 500, (ask, answer.status_code, body[:300])
        answers[ask] = (answer.status_code, body)
    status, body = answers["/rendered"]
    if decodes_here(path):
        assert status == 200, body[:300]
        assert Image.open(BytesIO(body)).size == (ds.Columns, ds.Rows)
