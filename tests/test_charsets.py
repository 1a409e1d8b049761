"""GB 2312 with code extensions (Specific Character Set `\\ISO 2022 IR 58`), as consoles
send it: every text value decoded without its escape sequences (not only the Patient's
Name), so the index, QIDO-RS, WADO-RS metadata and C-FIND answers carry the Chinese text,
and every value written with the G1 designation before each run of Chinese, as PS3.5
Annex K's example and dcmtk read it."""

from __future__ import annotations

import json
import shutil
import subprocess
from io import BytesIO

import pytest
from django.test import Client
from pydicom import dcmread
from pydicom.dataset import Dataset

from cloudpacs import charsets
from cloudpacs.models import Instance
from tests.dicomweb_support import ingest, token_for
from tests.factories import make_dataset

IR58 = ["", "ISO 2022 IR 58"]
# PS3.5 K.2: Zhang^XiaoDong=张^小东= with ESC $ ) A before each ideographic component.
K2_NAME = b"Zhang^Xiaodong=\x1b$)A\xd5\xc5^\x1b$)A\xd0\xa1\xb6\xab"


def g1(text: str) -> bytes:
    return charsets.ESC_GB2312_G1 + text.encode("gb2312")


def console_dataset(**fields) -> Dataset:
    """A CT as a console writes it in GB 2312 with code extensions: raw values, escape
    sequences and all."""
    ds = make_dataset(character_set=IR58, **fields)
    ds["PatientName"].value = K2_NAME + b"="
    ds.add_new(0x00081030, "LO", g1("胸部平扫"))  # Study Description
    ds.add_new(0x00080080, "LO", g1("漩涡镇卫生院"))  # Institution Name
    ds.add_new(0x0008103E, "LO", g1("轴位") + b" 5mm")  # Series Description
    ds.add_new(0x00080090, "PN", b"Li^Ming=" + g1("李") + b"^" + g1("明"))  # Referring Physician
    return ds


def reread(ds: Dataset) -> Dataset:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    return dcmread(buffer)


def test_every_text_value_is_decoded_without_its_escape_sequences():
    ds = reread(console_dataset())
    assert str(ds.PatientName) == "Zhang^Xiaodong=张^小东"
    assert ds.PatientName.ideographic == "张^小东"
    assert ds.StudyDescription == "胸部平扫"
    assert ds.InstitutionName == "漩涡镇卫生院"
    assert ds.SeriesDescription == "轴位 5mm"
    assert ds.ReferringPhysicianName.ideographic == "李^明"


def test_values_are_written_with_the_g1_designation_before_each_run_of_chinese():
    ds = make_dataset(character_set=IR58, patient_name="Zhang^Xiaodong=张^小东", StudyDescription="CT 胸部 平扫")
    written = BytesIO()
    ds.save_as(written, enforce_file_format=True)
    raw = written.getvalue()
    assert K2_NAME in raw
    assert b"CT " + g1("胸部 平扫") in raw
    assert reread(ds).StudyDescription == "CT 胸部 平扫"


@pytest.mark.skipif(shutil.which("dcmdump") is None, reason="dcmtk is not installed")
def test_dcmtk_reads_what_is_written(tmp_path):
    ds = make_dataset(character_set=IR58, patient_name="Zhang^Xiaodong=张^小东", StudyDescription="胸部平扫")
    path = tmp_path / "ir58.dcm"
    ds.save_as(path, enforce_file_format=True)
    dump = subprocess.run(["dcmdump", "+U8", str(path)], capture_output=True, check=True, timeout=60).stdout.decode(
        "utf-8"
    )
    assert "[Zhang^Xiaodong=张^小东]" in dump
    assert "[胸部平扫]" in dump


@pytest.mark.django_db
def test_the_index_qido_and_metadata_carry_the_chinese_text(ct_modality, technologist, tmp_path):
    instance = ingest(console_dataset(patient_id="IR58"), ct_modality, tmp_path)
    instance = Instance.objects.select_related("series__study__patient").get(pk=instance.pk)
    study = instance.series.study
    assert (study.patient.name_alphabetic, study.patient.name_ideographic) == ("Zhang^Xiaodong", "张^小东")
    assert study.description == "胸部平扫"
    assert study.institution_name == "漩涡镇卫生院"
    assert instance.series.description == "轴位 5mm"
    assert "\x1b" not in study.referring_physician

    api = Client(HTTP_AUTHORIZATION=f"Token {token_for(technologist)}", HTTP_ACCEPT="*/*")
    response = api.get("/dicomweb/studies", {"PatientName": "张*", "includefield": "StudyDescription"})
    (found,) = response.json()
    assert found["00081030"]["Value"] == ["胸部平扫"]
    assert found["00100010"]["Value"] == [{"Alphabetic": "Zhang^Xiaodong", "Ideographic": "张^小东"}]
    url = (
        f"/dicomweb/studies/{study.study_uid}/series/{instance.series.series_uid}/instances/{instance.sop_instance_uid}"
    )
    document = api.get(url + "/metadata").json()[0]
    assert document["00100010"]["Value"] == [{"Alphabetic": "Zhang^Xiaodong", "Ideographic": "张^小东"}]
    assert document["00080090"]["Value"] == [{"Alphabetic": "Li^Ming", "Ideographic": "李^明"}]
    assert document["00081030"]["Value"] == ["胸部平扫"]
    assert "\\u001b" not in json.dumps(document) and "\x1b" not in json.dumps(document, ensure_ascii=False)


@pytest.mark.django_db
def test_a_migration_mends_rows_indexed_with_the_escape_sequences(ct_modality, tmp_path):
    import importlib

    from django.apps import apps

    from cloudpacs.models import InstanceMetadata, Series, Study
    from cloudpacs.services import store_study_metadata

    instance = ingest(console_dataset(patient_id="IR58OLD"), ct_modality, tmp_path)
    study = Study.objects.get(pk=instance.series.study_id)
    store_study_metadata([study.pk])
    # As pydicom's own decoding left them before cloudpacs.charsets.
    escape = "\x1b$)A"
    Study.objects.filter(pk=study.pk).update(
        description=escape + "胸部平扫",
        institution_name=escape + "漩涡镇卫生院",
        referring_physician=f"Li^Ming={escape}李^{escape}明",
    )
    Series.objects.filter(pk=instance.series_id).update(description=escape + "轴位 5mm")
    other = ingest(
        make_dataset(patient_id="UTF8", character_set="ISO_IR 192", StudyDescription="头颅"), ct_modality, tmp_path
    )
    store_study_metadata([other.series.study_id])

    importlib.import_module("cloudpacs.migrations.0010_iso2022_ir58_text").mend_text(apps, None)

    study.refresh_from_db()
    assert (study.description, study.institution_name) == ("胸部平扫", "漩涡镇卫生院")
    assert study.referring_physician == "Li^Ming=李^明"
    assert Series.objects.get(pk=instance.series_id).description == "轴位 5mm"
    assert not InstanceMetadata.objects.filter(instance=instance).exists()
    assert InstanceMetadata.objects.filter(instance=other).exists()
