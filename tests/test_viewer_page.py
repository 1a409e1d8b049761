"""The standalone viewer page /viewer/<StudyInstanceUID>/: who may open it, what it names."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from django.urls import reverse
from pydicom.uid import generate_uid

from cloudpacs import storage
from cloudpacs.dicomweb.rendering import RenderOptions, reduce, target_size
from cloudpacs.models import Instance, Study
from cloudpacs.services import ingest_instance
from cloudpacs.views.viewer import stand_in_first, stand_in_size, stand_in_url
from consults.services import open_consult_for_study
from facilities.models import AuditEvent
from tests.factories import make_dataset, make_modality, write_dataset

pytestmark = pytest.mark.django_db

# What a build of the viewer names its entry (frontend/vite.config.js, its manifest.json).
ENTRY = "viewer/viewer-AbC_12-9.js"
STYLES = "viewer/viewer-Zz0_xy-8.css"


@pytest.fixture(autouse=True)
def built_viewer(tmp_path_factory, settings) -> Path:
    """A build's manifest in a static directory of its own, so that these tests read the
    names it gives, whether or not the viewer was built in this checkout."""
    static = tmp_path_factory.mktemp("static")
    (static / "viewer").mkdir()
    manifest = {
        "src/main.js": {
            "file": ENTRY.removeprefix("viewer/"),
            "isEntry": True,
            "css": [STYLES.removeprefix("viewer/")],
        },
        "src/tools.js": {
            "file": "chunks/tools-DRJvwrGt.js",
            "isDynamicEntry": True,
            "imports": ["src/main.js", "_ZoomTool-Qq1_2-3w.js"],
        },
        "_ZoomTool-Qq1_2-3w.js": {"file": "chunks/ZoomTool-Qq1_2-3w.js", "imports": ["src/main.js"]},
        "src/mpr.js": {"file": "chunks/mpr-C1LvV-6E.js", "isDynamicEntry": True, "imports": ["src/main.js"]},
    }
    (static / "viewer" / "manifest.json").write_text(json.dumps(manifest))
    settings.STATICFILES_DIRS = [static]
    return static


def ingest(tmp_path: Path, modality, *, sent_for_reading: bool = True, **fields) -> Study:
    """A study stored through the ingest service; sent for reading (with its consult) as
    radiologists only see studies that were."""
    ds = make_dataset(**fields)
    path = write_dataset(ds, tmp_path / f"{ds.SOPInstanceUID}.dcm")
    ingest_instance(
        path,
        transfer_syntax_uid=ds.file_meta.TransferSyntaxUID,
        sop_class_uid=ds.SOPClassUID,
        sop_instance_uid=ds.SOPInstanceUID,
        modality=modality,
    )
    study = Study.objects.get(study_uid=ds.StudyInstanceUID)
    if sent_for_reading:
        open_consult_for_study(study)
    return study


@pytest.fixture
def study(tmp_path, ct_modality) -> Study:
    return ingest(tmp_path, ct_modality, patient_id="P100", patient_name="Wang^Wu")


def url(study: Study) -> str:
    return f"/viewer/{study.study_uid}/"


def test_the_radiologist_gets_the_viewer_for_the_study(radiologist_client, study):
    response = radiologist_client.get(url(study))
    assert response.status_code == 200
    page = response.content.decode()
    assert f'data-study-uid="{study.study_uid}"' in page
    # The build's entry and its styles by the names its manifest gives them (the entry run
    # by the page's script once the stand-in is painted: see below).
    assert f'<link rel="modulepreload" href="/static/{ENTRY}" data-yunying-entry>' in page
    assert f'<link rel="stylesheet" href="/static/{STYLES}">' in page
    series_uid = study.series.get().series_uid
    assert f'data-series-uid="{series_uid}"' in page
    # The first series' metadata is asked for before the viewer's code has arrived.
    assert f"/dicomweb/studies/{study.study_uid}/series/{series_uid}/metadata" in page


def test_the_township_technologist_opens_their_own_study(technologist_client, study):
    assert technologist_client.get(url(study)).status_code == 200


def test_another_townships_technologist_gets_404(outsider_client, study):
    assert outsider_client.get(url(study)).status_code == 404


def test_an_administrator_is_refused(administrator_client, study):
    assert administrator_client.get(url(study)).status_code == 403


def test_an_anonymous_visitor_is_sent_to_the_login_page(client, study):
    response = client.get(url(study))
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_an_unknown_study_is_404(radiologist_client, db):
    assert radiologist_client.get(f"/viewer/{generate_uid()}/").status_code == 404


def test_the_page_is_in_chinese_with_its_window_presets(radiologist_client, study):
    page = radiologist_client.get(url(study)).content.decode()
    for label in ("窗宽窗位", "肺窗", "脑窗", "骨窗", "测距", "测角", "播放", "反相"):
        assert label in page


def test_the_page_is_in_english_when_asked(radiologist_client, study):
    radiologist_client.cookies["django_language"] = "en"
    page = radiologist_client.get(url(study)).content.decode()
    assert "Lung" in page
    assert "Window/level" in page


def test_opening_the_viewer_is_audited(radiologist_client, radiologist, study):
    radiologist_client.get(url(study))
    event = AuditEvent.objects.get(action="cloudpacs.study.viewed", object_id=study.study_uid)
    assert event.actor == radiologist


def test_the_patients_other_studies_are_offered_as_priors(tmp_path, radiologist_client, study, ct_modality):
    prior = ingest(tmp_path, ct_modality, patient_id="P100", patient_name="Wang^Wu")
    stranger = ingest(tmp_path, ct_modality, patient_id="P200", patient_name="Li^Si")
    page = radiologist_client.get(url(study)).content.decode()
    assert f'<option value="{prior.study_uid}"' in page
    assert stranger.study_uid not in page


def test_a_study_never_sent_for_reading_is_404_for_a_radiologist(tmp_path, radiologist_client, ct_modality):
    kept = ingest(tmp_path, ct_modality, sent_for_reading=False)
    assert radiologist_client.get(url(kept)).status_code == 404


def test_a_prior_named_in_the_query_opens_in_the_second_pane(tmp_path, radiologist_client, study, ct_modality):
    prior = ingest(tmp_path, ct_modality, patient_id="P100", patient_name="Wang^Wu")
    page = radiologist_client.get(url(study) + f"?prior={prior.study_uid}").content.decode()
    assert f'data-prior-study-uid="{prior.study_uid}"' in page


def test_a_prior_from_another_township_is_404_for_a_technologist(tmp_path, technologist_client, study, other_township):
    elsewhere = ingest(tmp_path, make_modality(other_township), patient_id="P100")
    assert technologist_client.get(url(study) + f"?prior={elsewhere.study_uid}").status_code == 404


def test_a_prior_that_is_not_a_uid_is_404(radiologist_client, study):
    assert radiologist_client.get(url(study) + "?prior=abc").status_code == 404


def test_the_page_names_the_first_image_so_that_its_stand_in_is_asked_for_at_once(
    tmp_path, radiologist_client, ct_modality
):
    study_uid, series_uid = generate_uid(), generate_uid()
    for number in (3, 1, 2):
        ds = make_dataset(study_uid=study_uid, series_uid=series_uid, instance_number=number)
        path = write_dataset(ds, tmp_path / f"{ds.SOPInstanceUID}.dcm")
        ingest_instance(
            path,
            transfer_syntax_uid=ds.file_meta.TransferSyntaxUID,
            sop_class_uid=ds.SOPClassUID,
            sop_instance_uid=ds.SOPInstanceUID,
            modality=ct_modality,
        )
        if number == 1:
            first = ds.SOPInstanceUID
    study = Study.objects.get(study_uid=study_uid)
    open_consult_for_study(study)
    page = radiologist_client.get(url(study)).content.decode()
    assert f'data-first-instance-url="/dicomweb/studies/{study_uid}/series/{series_uid}/instances/{first}"' in page
    # The script comes after the viewer's markup, so that the first pane has its size.
    assert page.index("data-first-instance-url") > page.index("data-yunying-viewer")


def stand_in_of(page: str) -> str:
    """The src of the first pane's stand-in in the page's markup."""
    found = re.search(r'<img class="yv-stand-in" data-preview src="([^"]+)"', page)
    assert found, "no stand-in in the markup"
    return found.group(1)


def test_the_page_carries_a_quick_stand_in_itself(tmp_path, radiologist_client, ct_modality):
    study = ingest(tmp_path, ct_modality, rows=48, columns=64)
    instance = Instance.objects.get(series__study=study)
    page = radiologist_client.get(url(study)).content.decode()
    # A CT slice is rendered in a few milliseconds: the first pane's markup has the picture
    # itself, painted in the page's first frame with no request of its own to wait for.
    shown = stand_in_of(page)
    assert shown.startswith("data:image/jpeg;base64,")
    assert page.count('<img class="yv-stand-in"') == 1
    assert page.index('data-pane="0"') < page.index(shown) < page.index('data-pane="1"')
    assert 'width="64" height="48"' in page
    # Nothing to preload: the very bytes that its /rendered URL answers.
    assert 'rel="preload" as="image"' not in page
    rendered = radiologist_client.get(
        f"/dicomweb/studies/{study.study_uid}/series/{instance.series.series_uid}"
        f"/instances/{instance.sop_instance_uid}/rendered?accept=image/jpeg&viewport=64,48"
    )
    assert base64.b64decode(shown.removeprefix("data:image/jpeg;base64,")) == rendered.content


def test_the_head_preloads_a_large_images_stand_in_at_its_own_size(tmp_path, radiologist_client, ct_modality):
    study = ingest(tmp_path, ct_modality, rows=1030, columns=1030)
    instance = Instance.objects.get(series__study=study)
    page = radiologist_client.get(url(study)).content.decode()
    stand_in = (
        f"/dicomweb/studies/{study.study_uid}/series/{instance.series.series_uid}"
        f"/instances/{instance.sop_instance_uid}/rendered?accept=image/jpeg&amp;viewport=515,515"
    )
    # Its rendering takes longer than a page should wait: asked for from the head, before
    # the viewer's code and before the pane has a size; the first pane shows that very URL
    # in its markup, so the browser uses what it preloaded, painted before any script.
    assert f'<link rel="preload" as="image" href="{stand_in}"' in page
    assert page.index(stand_in) < page.index(ENTRY) < page.index("data-yunying-viewer")
    assert stand_in_of(page) == stand_in
    assert page.count(f'src="{stand_in}"') == 1
    assert page.index('data-pane="0"') < page.index(f'src="{stand_in}"') < page.index('data-pane="1"')
    assert radiologist_client.get(stand_in.replace("&amp;", "&"))["Content-Type"] == "image/jpeg"


def test_a_stand_in_the_page_cannot_render_is_asked_for_by_its_url(tmp_path, radiologist_client, ct_modality, caplog):
    study = ingest(tmp_path, ct_modality, rows=48, columns=64)
    instance = Instance.objects.get(series__study=study)
    storage.path_for(instance.storage_key).unlink()
    response = radiologist_client.get(url(study))
    # The page opens all the same, and names the stand-in's URL as for a large image (whose
    # answer, a 503 here, has the page's script take the picture away).
    assert response.status_code == 200
    page = response.content.decode()
    assert "/rendered?accept=image/jpeg&amp;viewport=64,48" in stand_in_of(page)
    assert 'rel="preload" as="image"' in page
    assert "not rendered in the page" in caplog.text


def test_without_the_images_size_the_pane_has_no_stand_in_in_its_markup(tmp_path, radiologist_client, ct_modality):
    study = ingest(tmp_path, ct_modality)
    Instance.objects.filter(series__study=study).update(rows=None)
    page = radiologist_client.get(url(study)).content.decode()
    # The page's script asks for it at the pane's size instead, once the pane has one.
    assert "data-preview" not in page
    assert 'rel="preload" as="image"' not in page
    assert "data-first-instance-url" in page


def test_the_page_and_its_stand_in_take_few_queries(
    tmp_path, radiologist_client, ct_modality, django_assert_max_num_queries
):
    study = ingest(tmp_path, ct_modality, rows=48, columns=64)
    radiologist_client.get(url(study))  # the session's renewal (at most once a minute) done
    with django_assert_max_num_queries(9):
        # The session, the user and their facility; the study in the reader's scope, its
        # series and their instances not counted yet, the first image, the priors; the audit
        # entry. The stand-in in the page costs none: the first image's query names its file.
        page = radiologist_client.get(url(study)).content.decode()
    assert stand_in_of(page).startswith("data:image/jpeg;base64,")
    large = ingest(tmp_path, ct_modality, rows=1030, columns=1030)
    page = radiologist_client.get(url(large)).content.decode()
    stand_in = re.search(r'rel="preload" as="image" href="([^"]+)"', page).group(1).replace("&amp;", "&")
    with django_assert_max_num_queries(3):
        # The session, the user, and the instance within the reader's scope.
        assert radiologist_client.get(stand_in).status_code == 200


def test_the_viewers_code_waits_for_a_stand_in_the_server_renders_quickly(tmp_path, radiologist_client, ct_modality):
    # A CT slice: the head has the browser fetch and compile the entry, and the page's
    # script runs it once the stand-in is painted (static/js/viewer-preview.js).
    page = radiologist_client.get(url(ingest(tmp_path, ct_modality, rows=512, columns=512))).content.decode()
    assert f'<link rel="modulepreload" href="/static/{ENTRY}" data-yunying-entry>' in page
    assert 'type="module"' not in page
    assert page.index(ENTRY) < page.index("data-yunying-viewer") < page.index("js/viewer-preview.js")


def test_the_viewers_code_does_not_wait_for_the_stand_in_of_a_large_image(tmp_path, radiologist_client, ct_modality):
    # A 2048 x 2048 radiograph takes the server longer to render than the browser takes to
    # fetch and compile the entry, and one without its size in the index has no stand-in
    # in the markup: the entry is an ordinary module script, run as soon as it is ready.
    large = ingest(tmp_path, ct_modality, rows=2048, columns=2048)
    unknown = ingest(tmp_path, ct_modality)
    Instance.objects.filter(series__study=unknown).update(rows=None)
    for study in (large, unknown):
        page = radiologist_client.get(url(study)).content.decode()
        assert f'<script type="module" src="/static/{ENTRY}"></script>' in page
        assert "data-yunying-entry" not in page
    assert stand_in_first({"rows": 1024, "columns": 1024}) and not stand_in_first({"rows": 1025, "columns": 1024})
    assert not stand_in_first(None)


def test_the_stand_in_of_a_large_image_is_at_most_1024_pixels_a_side_and_never_enlarged():
    study = Study(study_uid="1.2.3")
    first = {"series_uid": "1.2.4", "sop_instance_uid": "1.2.5", "rows": 2000, "columns": 2736}
    # Three times smaller, from the source's first 1998 rows (whole 3 x 3 blocks).
    wanted = "/instances/1.2.5/rendered?accept=image/jpeg&viewport=912,666,0,0,2736,1998"
    assert stand_in_url(study, first).endswith(wanted)
    assert stand_in_url(study, {**first, "rows": 128, "columns": 128}).endswith("&viewport=128,128")
    # Without its size in the index the page's script asks at the pane's size.
    assert stand_in_url(study, {**first, "rows": None}) == ""
    assert stand_in_url(study, None) == ""


def test_two_first_images_with_one_number_leave_the_choice_to_the_metadata(tmp_path, radiologist_client, ct_modality):
    study_uid, series_uid = generate_uid(), generate_uid()
    for _ in range(2):
        ds = make_dataset(study_uid=study_uid, series_uid=series_uid, instance_number=1)
        path = write_dataset(ds, tmp_path / f"{ds.SOPInstanceUID}.dcm")
        ingest_instance(
            path,
            transfer_syntax_uid=ds.file_meta.TransferSyntaxUID,
            sop_class_uid=ds.SOPClassUID,
            sop_instance_uid=ds.SOPInstanceUID,
            modality=ct_modality,
        )
    study = Study.objects.get(study_uid=study_uid)
    open_consult_for_study(study)
    page = radiologist_client.get(url(study)).content.decode()
    assert "data-first-instance-url" not in page
    assert f"/series/{series_uid}/metadata" in page


def test_every_file_of_the_built_viewer_is_cached_for_good_and_its_manifest_is_not(settings):
    immutable = re.compile(settings.WHITENOISE_IMMUTABLE_FILE_TEST)
    hashed = (
        ENTRY,
        STYLES,
        "viewer/chunks/tools-DRJvwrGt.js",
        "viewer/workers/decodeImageFrameWorker-CXmznAEA.js",
        "viewer/assets/openjph-odeu-u12.wasm",
    )
    for name in hashed:
        assert immutable.search(f"/static/{name}")
    # Named by fixed names: a new build (or a new page script) must reach the browser within WhiteNoise's 60 s.
    for name in ("viewer/manifest.json", "js/viewer-preview.js", "viewer/viewer.js", "css/app.css"):
        assert not immutable.search(f"/static/{name}")


TOOLS = ["/static/viewer/chunks/tools-DRJvwrGt.js", "/static/viewer/chunks/ZoomTool-Qq1_2-3w.js"]


def test_the_page_has_the_browser_fetch_the_tools_chunks_but_not_the_mpr(tmp_path, radiologist_client, ct_modality):
    # Fetched and compiled while the first image loads, run after it (viewer.js loadTools):
    # the tools and the chunk they share with the MPR; not the entry again, nor the MPR.
    # With a stand-in in the page, its script asks for them once the stand-in is painted;
    # with one asked for by URL (a large image), the head does.
    page = radiologist_client.get(url(ingest(tmp_path, ct_modality))).content.decode()
    assert stand_in_of(page).startswith("data:")
    assert not re.findall(r'<link rel="modulepreload" href="([^"]+)">', page)
    assert f'data-later="{" ".join(TOOLS)}"' in page
    page = radiologist_client.get(url(ingest(tmp_path, ct_modality, rows=1030, columns=1030))).content.decode()
    preloads = re.findall(r'<link rel="modulepreload" href="([^"]+)">', page)
    assert preloads == TOOLS
    assert page.index(ENTRY) < page.index(preloads[0])
    assert "data-later" not in page


def test_the_page_names_the_entry_of_the_build_it_finds_now(radiologist_client, study, built_viewer):
    manifest = built_viewer / "viewer" / "manifest.json"
    assert ENTRY in radiologist_client.get(url(study)).content.decode()
    # A rebuild while the server runs: the next page names the new entry.
    manifest.write_text(json.dumps({"src/main.js": {"file": "viewer-NEW12345.js", "css": []}}))
    stat = manifest.stat()
    os.utime(manifest, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    page = radiologist_client.get(url(study)).content.decode()
    assert '<link rel="modulepreload" href="/static/viewer/viewer-NEW12345.js" data-yunying-entry>' in page
    assert ENTRY not in page


def test_without_a_build_the_page_keeps_its_server_rendered_first_image(
    radiologist_client, study, settings, tmp_path, caplog
):
    settings.STATICFILES_DIRS = [tmp_path]
    settings.STATIC_ROOT = tmp_path / "collected"
    page = radiologist_client.get(url(study)).content.decode()
    assert 'type="module"' not in page
    assert "data-yunying-entry" not in page
    assert stand_in_of(page).startswith("data:image/jpeg;base64,")
    assert "the viewer is not built" in caplog.text


def test_the_style_sheets_are_in_the_page_allowed_by_their_hashes(radiologist_client, study, built_viewer):
    site = "body { margin: 0; }\n.content > p { color: #1d2733; }\n"
    viewer = ".yv { display: flex; }\n"
    (built_viewer / "css").mkdir()
    (built_viewer / "css" / "app.css").write_text(site)
    (built_viewer / STYLES).write_text(viewer)
    response = radiologist_client.get(url(study))
    page = response.content.decode()
    # Nothing for the first paint (the stand-in's) to wait for: both as they are, in order,
    # in the head.
    assert re.findall(r"<style>(.*?)</style>", page, re.S) == [site, viewer]
    assert 'rel="stylesheet"' not in page
    assert page.index("<style>") < page.index("</head>")
    style_src = next(
        part for part in response["Content-Security-Policy"].split("; ") if part.startswith("style-src ")
    ).split()
    for text in (site, viewer):
        digest = base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in style_src
    assert style_src[:2] == ["style-src", "'self'"] and "'unsafe-inline'" not in style_src
    # Another page keeps the plain policy and its <link>.
    other = radiologist_client.get(reverse("api_tokens"))
    assert "sha256-" not in other["Content-Security-Policy"] and "<style>" not in other.content.decode()


def test_a_style_sheet_that_is_not_there_is_linked_as_before(radiologist_client, study):
    page = radiologist_client.get(url(study)).content.decode()
    assert f'<link rel="stylesheet" href="/static/{STYLES}">' in page
    assert "<style>" not in page


def test_the_stand_in_has_its_size_in_the_markup(tmp_path, radiologist_client, ct_modality):
    page = radiologist_client.get(url(ingest(tmp_path, ct_modality, rows=2000, columns=2736))).content.decode()
    # Laid out at its own proportions before its bytes are in, scaled to the pane by the style sheet.
    assert re.search(r'<img class="yv-stand-in" data-preview src="[^"]+" width="912" height="666"', page)


@pytest.mark.parametrize("rows,columns", [(2736, 2736), (2000, 2736), (2400, 3001), (3328, 4096), (1025, 1024)])
def test_a_large_images_stand_in_is_rendered_by_whole_blocks_with_no_resampling_after(rows, columns):
    # The server averages k x k blocks while the image stays at least twice the target;
    # at the stand-in's size that reduction alone gives the output, no resize left.
    first = {"series_uid": "1.2.4", "sop_instance_uid": "1.2.5", "rows": rows, "columns": columns}
    width, height = stand_in_size(first)
    assert max(width, height) <= 1024
    query = stand_in_url(Study(study_uid="1.2.3"), first).split("viewport=")[1]
    viewport = [int(number) for number in query.split(",")]
    image = np.zeros((rows, columns), dtype=np.uint16)
    if len(viewport) == 6:
        sx, sy, sw, sh = viewport[2:]
        image = image[sy : sy + sh, sx : sx + sw]
    target = target_size(image.shape[1], image.shape[0], RenderOptions(viewport=(viewport[0], viewport[1])))
    assert target == (width, height)
    assert reduce(image, target).shape == (height, width)
