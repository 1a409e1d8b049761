"""WADO-RS metadata from documents stored by the stability sweep when a study arrives:
the same bytes as reading each file on request gave (CT, a DX with a VOI LUT, Chinese
names in GB18030 and ISO_IR 192, a JPEG 2000 instance), no file read on request, and
documents computed once, on request, for instances that have none yet."""

from __future__ import annotations

import json
from io import BytesIO
from pathlib import Path
from xml.etree import ElementTree

import pytest
from django.test import Client
from pydicom.uid import generate_uid

from cloudpacs import storage
from cloudpacs.dicomweb import json as dj
from cloudpacs.dicomweb.multipart import parse_media_type, read_parts
from cloudpacs.models import Instance, InstanceMetadata
from cloudpacs.services import store_study_metadata
from consults.tasks import sweep_stable_studies
from facilities.models import Modality, User
from tests.dicomweb_support import compressed_ct, ingest, token_for, voi_lut_dx
from tests.factories import make_dataset

pytestmark = pytest.mark.django_db

BASE = "http://testserver/dicomweb/studies"


def ct_series(character_set: str, name: str) -> list:
    study_uid, series_uid = generate_uid(), generate_uid()
    return [
        make_dataset(
            study_uid=study_uid,
            series_uid=series_uid,
            patient_name=name,
            character_set=character_set,
            instance_number=number,
            StudyDescription="头颅平扫",
            SeriesDescription="轴位 5mm",
        )
        for number in (1, 2, 3)
    ]


CASES = {
    "ct_utf8": lambda: ct_series("ISO_IR 192", "Zhang^San=张^三"),
    "ct_gb18030": lambda: ct_series("GB18030", "Zhang^San=张^三"),
    "dx_voi_lut": lambda: [voi_lut_dx(patient_name="Li^Si=李^四", character_set="ISO_IR 192")],
    "compressed": lambda: [compressed_ct(patient_name="Wang^Wu=王^五", character_set="GB18030")],
}


@pytest.fixture
def technologist_api(technologist: User) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Token {token_for(technologist)}", HTTP_ACCEPT="*/*")


def store(datasets: list, modality: Modality, directory: Path) -> list[Instance]:
    return [ingest(ds, modality, directory) for ds in datasets]


def read_from_files(instances: list[Instance]) -> bytes:
    """What /metadata answered when it read every file on every request."""
    results = []
    for item in instances:
        series = item.series
        url = f"{BASE}/{series.study.study_uid}/series/{series.series_uid}/instances/{item.sop_instance_uid}"
        path = str(storage.path_for(item.storage_key))
        results.append(dj.instance_metadata(path, lambda tag, url=url: f"{url}/bulkdata/{tag}", item.rows))
    return json.dumps(results, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def series_url(item: Instance) -> str:
    return f"/dicomweb/studies/{item.series.study.study_uid}/series/{item.series.series_uid}"


@pytest.mark.parametrize("case", sorted(CASES))
def test_series_metadata_is_byte_for_byte_what_reading_the_files_gave(
    case, technologist_api, ct_modality, dr_modality, tmp_path
):
    datasets = CASES[case]()
    modality = dr_modality if datasets[0].Modality == "DX" else ct_modality
    instances = store(datasets, modality, tmp_path)
    response = technologist_api.get(series_url(instances[0]) + "/metadata")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/dicom+json"
    assert response.content == read_from_files(instances)
    first = response.json()[0]
    assert first["00100010"]["Value"][0]["Ideographic"].startswith(("张", "李", "王"))
    assert first["7FE00010"]["BulkDataURI"].startswith(BASE)


def test_study_and_instance_metadata_match_reading_the_files_too(technologist_api, ct_modality, tmp_path):
    instances = store(CASES["ct_gb18030"](), ct_modality, tmp_path)
    study_url = f"/dicomweb/studies/{instances[0].series.study.study_uid}"
    assert technologist_api.get(study_url + "/metadata").content == read_from_files(instances)
    one = instances[1]
    response = technologist_api.get(f"{series_url(one)}/instances/{one.sop_instance_uid}/metadata")
    assert response.content == read_from_files([one])


def test_metadata_comes_as_the_native_dicom_model_when_asked_for_in_xml(technologist_api, dr_modality, tmp_path):
    # PS3.18 Table 10.4.4-1 requires multipart/related; type="application/dicom+xml" for
    # metadata resources (PS3.19 A.1); it was 406.
    instances = store(CASES["dx_voi_lut"](), dr_modality, tmp_path)
    url = series_url(instances[0]) + "/metadata"
    as_json = technologist_api.get(url).json()[0]
    response = technologist_api.get(url, HTTP_ACCEPT='multipart/related; type="application/dicom+xml"')
    assert response.status_code == 200
    media_type, params = parse_media_type(response["Content-Type"])
    assert (media_type, params["type"]) == ("multipart/related", "application/dicom+xml")
    (part,) = read_parts(BytesIO(response.content), params["boundary"])
    assert part.content_type == "application/dicom+xml"
    root = ElementTree.fromstring(part.file.read())  # noqa: S314 - the platform's own answer
    assert root.tag == "NativeDicomModel"
    assert [element.get("tag") for element in root.findall("DicomAttribute")] == list(as_json)
    assert root.find("DicomAttribute[@tag='00080018']").get("keyword") == "SOPInstanceUID"
    name = root.find("DicomAttribute[@tag='00100010']/PersonName[@number='1']")
    assert (name.findtext("Alphabetic/FamilyName"), name.findtext("Ideographic/GivenName")) == ("Li", "四")
    assert root.find("DicomAttribute[@tag='7FE00010']/BulkData").get("uri") == as_json["7FE00010"]["BulkDataURI"]
    descriptor = root.find("DicomAttribute[@tag='00283010']/Item[@number='1']/DicomAttribute[@tag='00283002']")
    assert [value.text for value in descriptor.findall("Value")] == ["4096", "0", "12"]
    assert technologist_api.get(url, HTTP_ACCEPT="application/dicom+xml").status_code == 406


def test_the_stability_sweep_stores_each_instance_s_metadata_with_relative_bulk_data_uris(
    ct_modality, tmp_path, settings
):
    settings.STUDY_STABLE_SECONDS = 0
    (item,) = store([make_dataset(patient_name="Zhang^San=张^三", character_set="ISO_IR 192")], ct_modality, tmp_path)
    assert not InstanceMetadata.objects.filter(instance=item).exists()
    sweep_stable_studies.delay()
    document = json.loads(InstanceMetadata.objects.get(instance=item).document)
    assert document["7FE00010"] == {"vr": "OW", "BulkDataURI": "bulkdata/7FE00010"}
    assert document["00080018"]["Value"] == [item.sop_instance_uid]


def test_a_request_reads_no_file_once_the_metadata_is_stored(technologist_api, ct_modality, tmp_path):
    instances = store(CASES["ct_utf8"](), ct_modality, tmp_path)
    expected = read_from_files(instances)
    assert store_study_metadata([instances[0].series.study_id]) == 3
    for item in instances:
        storage.path_for(item.storage_key).unlink()
    response = technologist_api.get(series_url(instances[0]) + "/metadata")
    assert response.status_code == 200
    assert response.content == expected


def test_an_instance_stored_without_metadata_gets_it_computed_once_and_kept(technologist_api, ct_modality, tmp_path):
    instances = store(CASES["ct_utf8"](), ct_modality, tmp_path)
    store_study_metadata([instances[0].series.study_id])
    InstanceMetadata.objects.filter(instance=instances[1]).delete()
    response = technologist_api.get(series_url(instances[0]) + "/metadata")
    assert response.content == read_from_files(instances)
    assert InstanceMetadata.objects.filter(instance__in=instances).count() == 3


def test_storing_a_study_s_metadata_skips_an_instance_whose_file_is_missing(ct_modality, tmp_path):
    instances = store(CASES["ct_utf8"](), ct_modality, tmp_path)
    storage.path_for(instances[0].storage_key).unlink()
    assert store_study_metadata([instances[0].series.study_id]) == 2
    assert not InstanceMetadata.objects.filter(instance=instances[0]).exists()
    assert store_study_metadata([instances[0].series.study_id]) == 0


def test_a_missing_file_without_stored_metadata_is_a_server_error(technologist_api, ct_modality, tmp_path):
    instances = store(CASES["ct_utf8"](), ct_modality, tmp_path)
    InstanceMetadata.objects.filter(instance=instances[0]).delete()
    storage.path_for(instances[0].storage_key).unlink()
    assert technologist_api.get(series_url(instances[0]) + "/metadata").status_code == 500


def test_bulk_data_uris_are_made_absolute_only_where_they_are_keys():
    document = dj.dumps({"00081030": {"vr": "LO", "Value": ['"BulkDataURI":"bulkdata/x']}}) + dj.dumps(
        {"7FE00010": {"vr": "OW", "BulkDataURI": "bulkdata/7FE00010"}}
    )
    made = dj.with_instance_url(document, "http://host/i")
    assert '"BulkDataURI":"http://host/i/bulkdata/7FE00010"' in made
    assert json.loads(made[: made.index("}}") + 2])["00081030"]["Value"] == ['"BulkDataURI":"bulkdata/x']


def test_group_lengths_are_left_out_and_the_attributes_come_in_the_order_of_their_tags(
    technologist_api, ct_modality, tmp_path
):
    # PS3.18 F.2.2: no Group Length (gggg,0000) element in the DICOM JSON model, at the
    # top or in an item, and the attributes in ascending order of their tags. Older
    # equipment writes group lengths (here with a wrong value, which nothing must trust);
    # Available Transfer Syntax UID (0008,3002) came after Patient's Name.
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    ds = make_dataset(patient_id="GROUPS")
    ds.add_new(0x00080000, "UL", 12345)
    ds.add_new(0x00100000, "UL", 1)
    item = Dataset()
    item.add_new(0x00080000, "UL", 7)
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = "T-D1100", "SRT", "Head"
    ds.AnatomicRegionSequence = Sequence([item])
    (instance,) = store([ds], ct_modality, tmp_path)
    response = technologist_api.get(f"{series_url(instance)}/instances/{instance.sop_instance_uid}/metadata")
    (document,) = response.json()
    assert not [key for key in document if key.endswith("0000")]
    assert list(document) == sorted(document)
    (region,) = document["00082218"]["Value"]
    assert list(region) == ["00080100", "00080102", "00080104"]
    assert document["00083002"]["Value"] == ["1.2.840.10008.1.2.1"]


def test_a_migration_drops_stored_documents_that_hold_group_lengths(ct_modality, tmp_path):
    import importlib

    from django.apps import apps

    with_groups = make_dataset(patient_id="GROUPS")
    with_groups.add_new(0x00080000, "UL", 12345)
    instances = store([with_groups, make_dataset(patient_id="PLAIN")], ct_modality, tmp_path)
    store_study_metadata({item.series.study_id for item in instances})
    # As documents were stored before group lengths were left out.
    old = json.loads(InstanceMetadata.objects.get(instance=instances[0]).document)
    old["00080000"] = {"vr": "UL", "Value": [12345]}
    InstanceMetadata.objects.filter(instance=instances[0]).update(document=dj.dumps(dict(sorted(old.items()))))

    importlib.import_module("cloudpacs.migrations.0012_metadata_without_group_lengths").drop_documents(apps, None)

    assert not InstanceMetadata.objects.filter(instance=instances[0]).exists()
    assert InstanceMetadata.objects.filter(instance=instances[1]).exists()


def test_a_migration_puts_the_available_transfer_syntax_of_stored_documents_in_tag_order(ct_modality, tmp_path):
    import importlib

    from django.apps import apps

    datasets = [make_dataset(patient_id=name) for name in ("BEFORE_PIXELS", "LAST", "SORTED")]
    instances = store(datasets, ct_modality, tmp_path)
    store_study_metadata({item.series.study_id for item in instances})
    computed = {item.pk: InstanceMetadata.objects.get(instance=item).document for item in instances}
    # As documents were stored before the attributes were sorted: (0008,3002) after the
    # dataset's attributes, before Pixel Data (or last, for an instance without).
    for item, keys in zip(instances[:2], (["00083002", "7FE00010"], ["7FE00010", "00083002"]), strict=True):
        old = json.loads(computed[item.pk])
        moved = {key: old.pop(key) for key in keys}
        InstanceMetadata.objects.filter(instance=item).update(document=dj.dumps(old | moved))
        assert InstanceMetadata.objects.get(instance=item).document != computed[item.pk]

    importlib.import_module("cloudpacs.migrations.0013_metadata_in_tag_order").sort_documents(apps, None)

    for item in instances:
        assert InstanceMetadata.objects.get(instance=item).document == computed[item.pk]
