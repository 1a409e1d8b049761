"""CT multiplanar reformats in a real headless Chromium: a generated 200-slice series opens
as axial, coronal and sagittal volume viewports (code fetched only then), a thick slab is
shown as its maximum intensity projection, and the way back gives the stack again."""

from __future__ import annotations

import numpy as np
import pytest
from django.conf import settings
from django.test import Client
from pydicom.uid import generate_uid

from cloudpacs.services import ingest_instance
from facilities.models import ExamKind, User
from tests.browser import session_context, watched_page
from tests.factories import make_dataset, make_facility, make_modality, make_user, write_dataset

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SLICES = 200
SIZE = 64


@pytest.fixture
def ct_series(transactional_db, tmp_path) -> dict[str, str]:
    """200 axial slices 1 mm apart: air, with a 700 HU block in the middle third."""
    township = make_facility("XUANWO", name="漩涡镇中心卫生院", short_name="漩涡")
    technologist = make_user(User.Role.TECHNOLOGIST, township, username="tech_mpr")
    ct = make_modality(township, ExamKind.CT, "XUANWO_CT")
    study_uid, series_uid = generate_uid(), generate_uid()
    for index in range(SLICES):
        hu = np.full((SIZE, SIZE), -1000)
        if 66 <= index < 133:
            hu[16:48, 16:48] = 700
        ds = make_dataset(
            study_uid=study_uid, series_uid=series_uid, instance_number=index + 1, rows=SIZE, columns=SIZE
        )
        ds.PixelSpacing = [1, 1]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-32, -32, -1.0 * index]
        ds.SliceThickness = 1
        ds.PixelData = (hu + 1024).astype(np.uint16).tobytes()
        path = write_dataset(ds, tmp_path / f"{ds.SOPInstanceUID}.dcm")
        ingest_instance(
            path,
            transfer_syntax_uid=ds.file_meta.TransferSyntaxUID,
            sop_class_uid=ds.SOPClassUID,
            sop_instance_uid=ds.SOPInstanceUID,
            modality=ct,
        )
    client = Client()
    client.force_login(technologist)
    return {"study": study_uid, "session": client.cookies[settings.SESSION_COOKIE_NAME].value}


def test_mpr_shows_three_planes_of_a_200_slice_series_with_a_mip_slab(live_server, ct_series, chromium):
    viewport = {"width": 1366, "height": 768}
    page = watched_page(session_context(chromium, live_server.url, ct_series["session"], viewport=viewport))
    chunks: list[str] = []
    page.on("request", lambda request: "/viewer/chunks/mpr-" in request.url and chunks.append(request.url))
    page.goto(f"{live_server.url}/viewer/{ct_series['study']}/")
    page.wait_for_function("() => window.yunyingViewer?.viewers[0].panes[0].stackMs != null", timeout=120_000)
    # The MPR code is not part of the first image's path.
    assert chunks == []
    page.click('[data-action="mpr"]')
    page.wait_for_function("() => window.yunyingViewer.viewers[0].mpr?.readyMs != null", timeout=120_000)
    assert len(chunks) == 1
    assert page.locator("[data-panes]").is_hidden()
    planes = page.evaluate(
        """() => window.yunyingViewer.viewers[0].mpr.viewports.map((v) => ({
            normal: Array.from(v.getCamera().viewPlaneNormal).map(Math.round),
            width: v.getCanvas().clientWidth}))"""
    )
    normals = [[abs(c) for c in plane["normal"]] for plane in planes]
    assert normals == [[0, 0, 1], [0, 1, 0], [1, 0, 0]]
    assert all(plane["width"] > 100 for plane in planes)
    # The volume holds every slice.
    dimensions = page.evaluate(
        "() => { const v = window.yunyingViewer.viewers[0].mpr.viewports[1];"
        " return Array.from(v.getImageData().dimensions); }"
    )
    assert sorted(dimensions) == [SIZE, SIZE, SLICES]
    # A 10 mm slab as its maximum intensity projection, in every plane.
    page.locator("[data-slab]").select_option("10")
    slabs = page.evaluate(
        """() => window.yunyingViewer.viewers[0].mpr.viewports.map(
            (v) => [v.getSlabThickness(), v.getBlendMode()])"""
    )
    assert all(abs(thickness - 10) < 0.01 and mode == 1 for thickness, mode in slabs)
    assert page.locator('.yv-mpr-pane[data-plane="coronal"]').is_visible()
    opened = page.evaluate("() => window.yunyingViewer.viewers[0].mpr.openedInMs")
    print(f"MPR ready {opened:.0f} ms after the button (200 x {SIZE} x {SIZE})")
    # And back to the stack.
    page.click('[data-action="mpr"]')
    assert page.locator("[data-panes]").is_visible()
    assert page.evaluate("() => window.yunyingViewer.viewers[0].mpr") is None
    assert page.errors == []
