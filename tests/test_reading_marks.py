"""Key images and measurements kept with the report: the viewer posts them, the archive
builds a Key Object Selection Document and a Grayscale Softcopy Presentation State with
pydicom and stores them through the ingest path, in series of their own (KO, PR) of the
study; DICOMweb serves them like any instance, the viewer reads them back, the report's
PDF shows the same key images."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from django.urls import reverse
from pydicom import dcmread
from pypdf import PdfReader

from cloudpacs import keyobjects
from cloudpacs.models import Instance, Series, Study
from cloudpacs.services import ingest_instance, key_image_instances, reading_marks
from cloudpacs.views.viewer import viewer_context
from consults import workflow
from consults.models import Consult
from consults.pdf import render_report_pdf
from facilities.models import AuditEvent
from tests.dicomweb_support import client_for
from tests.factories import make_dataset, write_dataset

LENGTH = {"tool": "Length", "frame": 1, "points": [[10.5, 12.0], [40.25, 12.0]], "text": "29.8 mm"}
ANGLE = {"tool": "Angle", "frame": 1, "points": [[5, 5], [20, 20], [35, 5]], "text": "90°"}
ELLIPSE = {"tool": "EllipticalROI", "frame": 1, "points": [[30, 40], [30, 20], [20, 30], [40, 30]], "text": "314 mm²"}


def save(client, study_uid: str, key_images: list, measurements: list):
    return client.post(
        reverse("viewer:save_marks", args=[study_uid]),
        {"key_images": json.dumps(key_images), "measurements": json.dumps(measurements)},
    )


def stored(study_uid: str, sop_class: str):
    instance = Instance.objects.filter(series__study__study_uid=study_uid, sop_class_uid=sop_class).latest("pk")
    from cloudpacs import storage

    with storage.open_key(instance.storage_key) as stream:
        return instance, dcmread(stream)


@pytest.fixture
def ct(archive):
    study_uid, series_uid, sops = archive.studies["zhang_ct"]
    return study_uid, series_uid, sops


def test_a_radiologist_keeps_key_images_and_a_length_as_a_kos_and_a_gsps_in_the_study(radiologist_client, ct):
    study_uid, series_uid, sops = ct
    response = save(
        radiologist_client,
        study_uid,
        [{"sop_instance_uid": sops[1], "frame": 1}, {"sop_instance_uid": sops[2], "frame": 1}],
        [{**LENGTH, "sop_instance_uid": sops[1]}, {**ELLIPSE, "sop_instance_uid": sops[2]}],
    )
    assert response.status_code == 200, response.content
    answer = response.json()

    kos_row, kos = stored(study_uid, keyobjects.KOS_CLASS)
    gsps_row, gsps = stored(study_uid, keyobjects.GSPS_CLASS)
    assert (answer["kos"], answer["gsps"]) == (kos.SOPInstanceUID, gsps.SOPInstanceUID)
    assert (kos_row.series.modality, gsps_row.series.modality) == ("KO", "PR")
    assert kos_row.series.series_uid != gsps_row.series.series_uid != series_uid
    for ds in (kos, gsps):
        assert ds.SpecificCharacterSet == "ISO_IR 192"
        assert ds.StudyInstanceUID == study_uid
        assert ds.PatientName.ideographic == "张^三" and ds.PatientID == "P0001"
        assert ds.AccessionNumber == "ACC001"
        assert ds.Manufacturer == "Yunying"
    # The radiologist made them.
    assert str(gsps.ContentCreatorName) == "Li^Yisheng=李^医生"
    observer = [item for item in kos.ContentSequence if item.ValueType == "PNAME"]
    assert observer[0].PersonName.ideographic == "李^医生"
    # The KOS: "Of Interest", TID 2010, the two images, the measured one pointing at the GSPS.
    title = kos.ConceptNameCodeSequence[0]
    assert (title.CodeValue, title.CodingSchemeDesignator, title.CodeMeaning) == ("113000", "DCM", "Of Interest")
    assert kos.ContentTemplateSequence[0].TemplateIdentifier == "2010"
    images = [item.ReferencedSOPSequence[0] for item in kos.ContentSequence if item.ValueType == "IMAGE"]
    assert [ref.ReferencedSOPInstanceUID for ref in images] == [sops[1], sops[2]]
    assert images[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == gsps.SOPInstanceUID
    evidence = kos.CurrentRequestedProcedureEvidenceSequence[0]
    referenced = {
        ref.ReferencedSOPInstanceUID
        for series in evidence.ReferencedSeriesSequence
        for ref in series.ReferencedSOPSequence
    }
    assert referenced == {sops[1], sops[2], gsps.SOPInstanceUID}
    # The GSPS: a two-point polyline and an ellipse, in pixels, on their own images, with their values.
    by_image = {a.ReferencedImageSequence[0].ReferencedSOPInstanceUID: a for a in gsps.GraphicAnnotationSequence}
    line = by_image[sops[1]].GraphicObjectSequence[0]
    assert (line.GraphicType, line.GraphicAnnotationUnits, line.NumberOfGraphicPoints) == ("POLYLINE", "PIXEL", 2)
    assert list(line.GraphicData) == [10.5, 12.0, 40.25, 12.0]
    assert by_image[sops[1]].TextObjectSequence[0].UnformattedTextValue == "29.8 mm"
    ellipse = by_image[sops[2]].GraphicObjectSequence[0]
    assert ellipse.GraphicType == "ELLIPSE" and len(ellipse.GraphicData) == 8
    assert gsps.RescaleType == "HU" and gsps.PresentationLUTShape == "IDENTITY"
    assert gsps.DisplayedAreaSelectionSequence[0].DisplayedAreaBottomRightHandCorner == [64, 64]
    # Indexed like any image, and audited.
    study = Study.objects.get(study_uid=study_uid)
    assert set(study.modalities_in_study.split("\\")) == {"CT", "KO", "PR"}
    event = AuditEvent.objects.get(action="cloudpacs.study.marks_saved")
    assert event.object_id == study_uid


def test_the_marks_come_back_as_they_were_saved(radiologist_client, ct):
    study_uid, series_uid, sops = ct
    save(
        radiologist_client,
        study_uid,
        [{"sop_instance_uid": sops[0], "frame": 1}],
        [
            {**LENGTH, "sop_instance_uid": sops[0]},
            {**ANGLE, "sop_instance_uid": sops[0]},
            {**ELLIPSE, "sop_instance_uid": sops[2]},
        ],
    )
    marks = radiologist_client.get(reverse("viewer:marks", args=[study_uid])).json()
    assert marks["key_images"] == [{"series_uid": series_uid, "sop_instance_uid": sops[0], "frame": 1}]
    tools = {(m["tool"], m["sop_instance_uid"]): m for m in marks["measurements"]}
    assert tools[("Length", sops[0])]["points"] == LENGTH["points"]
    assert tools[("Length", sops[0])]["text"] == "29.8 mm"
    assert tools[("Angle", sops[0])]["points"] == ANGLE["points"]
    # Cornerstone's order again (bottom, top, left, right).
    assert tools[("EllipticalROI", sops[2])]["points"] == ELLIPSE["points"]
    assert all(m["series_uid"] == series_uid for m in marks["measurements"])


def test_a_new_save_is_the_current_set_and_only_measurements_need_no_kos(radiologist_client, ct):
    study_uid, _, sops = ct
    save(radiologist_client, study_uid, [{"sop_instance_uid": sops[0]}], [{**LENGTH, "sop_instance_uid": sops[0]}])
    response = save(radiologist_client, study_uid, [], [{**ANGLE, "sop_instance_uid": sops[1]}])
    assert response.json()["kos"] == ""
    marks = reading_marks(Study.objects.get(study_uid=study_uid))
    assert marks["key_images"] == []
    assert [(m["tool"], m["sop_instance_uid"]) for m in marks["measurements"]] == [("Angle", sops[1])]
    save(radiologist_client, study_uid, [{"sop_instance_uid": sops[2]}], [])
    # The same two series keep every save, numbered.
    assert Series.objects.filter(study__study_uid=study_uid, modality__in=["KO", "PR"]).count() == 2
    kos_numbers = Instance.objects.filter(series__study__study_uid=study_uid, sop_class_uid=keyobjects.KOS_CLASS)
    assert sorted(kos_numbers.values_list("instance_number", flat=True)) == [1, 3]
    study = Study.objects.get(study_uid=study_uid)
    assert [i.sop_instance_uid for i, _ in key_image_instances(study)] == [sops[2]]


def test_a_frame_of_a_multiframe_image_is_named_by_its_number(radiologist_client, archive):
    study_uid, _, sops = archive.studies["wang_j2k"]
    assert save(radiologist_client, study_uid, [{"sop_instance_uid": sops[0], "frame": 2}], []).status_code == 200
    _, kos = stored(study_uid, keyobjects.KOS_CLASS)
    image = next(item for item in kos.ContentSequence if item.ValueType == "IMAGE").ReferencedSOPSequence[0]
    assert image.ReferencedFrameNumber == 2
    assert reading_marks(Study.objects.get(study_uid=study_uid))["key_images"][0]["frame"] == 2
    response = save(radiologist_client, study_uid, [{"sop_instance_uid": sops[0], "frame": 3}], [])
    assert response.status_code == 400 and "2" in response.json()["error"]


@pytest.mark.parametrize(
    ("key_images", "measurements", "says"),
    [
        ([], [], "没有要保存"),
        ([{"sop_instance_uid": "1.2.3"}], [], "不属于该检查"),
        ([{"sop_instance_uid": "not a uid"}], [], "UID"),
        ([], [{**LENGTH, "tool": "Freehand", "sop_instance_uid": "1.2"}], "未知的测量工具"),
        ([], [{**LENGTH, "points": [[1, 2]], "sop_instance_uid": "1.2"}], "2 个坐标点"),
        ([], [{**LENGTH, "points": [[1, 2], [3, "x"]], "sop_instance_uid": "1.2"}], "坐标点"),
        ({"sop_instance_uid": "1.2"}, [], "列表"),
    ],
)
def test_bad_marks_get_a_clear_error_and_nothing_is_stored(radiologist_client, ct, key_images, measurements, says):
    study_uid, _, _ = ct
    response = save(radiologist_client, study_uid, key_images, measurements)
    assert response.status_code == 400
    assert says in response.json()["error"]
    assert not Instance.objects.filter(series__study__study_uid=study_uid, sop_class_uid__in=[keyobjects.KOS_CLASS])


def test_an_image_of_another_study_is_refused(radiologist_client, archive):
    study_uid, _, _ = archive.studies["zhang_ct"]
    _, _, other = archive.studies["li_dx"]
    response = save(radiologist_client, study_uid, [{"sop_instance_uid": other[0]}], [])
    assert response.status_code == 400 and "不属于该检查" in response.json()["error"]


def test_only_a_radiologist_saves_and_an_outsider_sees_nothing(technologist_client, outsider_client, ct):
    study_uid, _, sops = ct
    assert save(technologist_client, study_uid, [{"sop_instance_uid": sops[0]}], []).status_code == 403
    # The township sees what the county kept.
    assert technologist_client.get(reverse("viewer:marks", args=[study_uid])).status_code == 200
    assert outsider_client.get(reverse("viewer:marks", args=[study_uid])).status_code == 404
    assert outsider_client.post(reverse("viewer:save_marks", args=[study_uid])).status_code == 403


def test_the_kos_and_gsps_are_served_over_dicomweb_referring_to_the_studys_instances(
    live_server, radiologist, radiologist_client, ct
):
    study_uid, series_uid, sops = ct
    save(radiologist_client, study_uid, [{"sop_instance_uid": sops[1]}], [{**LENGTH, "sop_instance_uid": sops[1]}])
    study_sops = set(
        Instance.objects.filter(series__study__study_uid=study_uid).values_list("sop_instance_uid", flat=True)
    )
    reader = client_for(live_server, radiologist)
    for modality in ("KO", "PR"):
        (series,) = reader.search_for_series(study_uid, search_filters={"Modality": modality})
        uid = series["0020000E"]["Value"][0]
        (instance,) = reader.search_for_instances(study_uid, uid)
        ds = reader.retrieve_instance(study_uid, uid, instance["00080018"]["Value"][0])
        if modality == "KO":
            assert ds.SOPClassUID == keyobjects.KOS_CLASS
            refs = [
                ref.ReferencedSOPInstanceUID
                for item in ds.CurrentRequestedProcedureEvidenceSequence
                for s in item.ReferencedSeriesSequence
                for ref in s.ReferencedSOPSequence
            ]
        else:
            assert ds.SOPClassUID == keyobjects.GSPS_CLASS
            refs = [
                ref.ReferencedSOPInstanceUID for s in ds.ReferencedSeriesSequence for ref in s.ReferencedImageSequence
            ]
            assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == series_uid
        assert refs and set(refs) <= study_sops
        assert sops[1] in refs
    # Their metadata (what OHIF reads first) too.
    metadata = reader.retrieve_study_metadata(study_uid)
    assert {m["00080016"]["Value"][0] for m in metadata} >= {keyobjects.KOS_CLASS, keyobjects.GSPS_CLASS}


def test_a_gb18030_study_keeps_its_patient_in_utf8_without_a_name_conflict(radiologist_client, tmp_path, ct_modality):
    from consults.services import open_consult_for_study

    ds = make_dataset(character_set="GB18030", patient_name="Wu^Chao=吴^超", patient_id="P0777")
    path = write_dataset(ds, tmp_path / "gb.dcm")
    ingest_instance(
        path, transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID), sop_class_uid=str(ds.SOPClassUID),
        sop_instance_uid=str(ds.SOPInstanceUID), modality=ct_modality,
    )  # fmt: skip
    study = Study.objects.get(study_uid=ds.StudyInstanceUID)
    open_consult_for_study(study)
    assert save(radiologist_client, study.study_uid, [{"sop_instance_uid": ds.SOPInstanceUID}], []).status_code == 200
    _, kos = stored(study.study_uid, keyobjects.KOS_CLASS)
    assert kos.SpecificCharacterSet == "ISO_IR 192" and kos.PatientName.ideographic == "吴^超"
    study.refresh_from_db()
    assert not study.patient_name_conflict


def test_the_viewer_hangs_image_series_only(radiologist, radiologist_client, ct):
    study_uid, series_uid, sops = ct
    save(radiologist_client, study_uid, [{"sop_instance_uid": sops[0]}], [{**LENGTH, "sop_instance_uid": sops[0]}])
    study = Study.objects.get(study_uid=study_uid)
    assert [s.series_uid for s in viewer_context(study, radiologist)["viewer_series"]] == [series_uid]


def test_the_report_pdf_shows_the_same_key_images(radiologist, radiologist_client, ct):
    study_uid, _, sops = ct
    study = Study.objects.get(study_uid=study_uid)
    consult = Consult.objects.get(study=study)
    workflow.claim_consult(consult, radiologist)
    workflow.sign_final(consult, radiologist, "所见", "印象")
    consult.refresh_from_db()

    def images(pdf: bytes) -> int:
        return sum(len(page.images) for page in PdfReader(io.BytesIO(pdf)).pages)

    before = images(render_report_pdf(consult, consult.report))
    save(radiologist_client, study_uid, [{"sop_instance_uid": sops[0]}, {"sop_instance_uid": sops[2]}], [])
    pdf = render_report_pdf(consult, consult.report)
    assert images(pdf) == before + 2
    assert "关键图像" in "".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)


def dump(tmp_path: Path, study_uid: str, sop_class: str) -> Path:
    instance, ds = stored(study_uid, sop_class)
    path = tmp_path / f"{instance.sop_instance_uid}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.skipif(shutil.which("dsrdump") is None, reason="needs dcmtk's dsrdump (apt-get install dcmtk)")
def test_dcmtk_reads_the_kos_as_a_key_object_selection(radiologist_client, ct, tmp_path):
    study_uid, _, sops = ct
    save(radiologist_client, study_uid, [{"sop_instance_uid": sops[0]}], [{**LENGTH, "sop_instance_uid": sops[0]}])
    result = subprocess.run(
        ["dsrdump", "-Ee", str(dump(tmp_path, study_uid, keyobjects.KOS_CLASS))],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Key Object Selection Document" in result.stdout
    assert "Of Interest" in result.stdout
    assert sops[0] in result.stdout or "IMAGE" in result.stdout
    assert "error" not in result.stderr.lower()


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="needs dciodvfy (apt-get install dicom3tools)")
@pytest.mark.parametrize("sop_class", [keyobjects.KOS_CLASS, keyobjects.GSPS_CLASS])
def test_dciodvfy_finds_no_error_in_the_objects(radiologist_client, ct, tmp_path, sop_class):
    study_uid, _, sops = ct
    save(radiologist_client, study_uid, [{"sop_instance_uid": sops[0]}], [{**LENGTH, "sop_instance_uid": sops[0]}])
    result = subprocess.run(
        ["dciodvfy", str(dump(tmp_path, study_uid, sop_class))], capture_output=True, text=True, check=False
    )
    said = (result.stdout + result.stderr).splitlines()
    print("\n".join(said))
    assert [line for line in said if line.startswith("Error")] == []
