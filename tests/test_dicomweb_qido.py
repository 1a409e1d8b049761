"""QIDO-RS over HTTP with the dicomweb-client package: every matching key the issue
names, Chinese names with wildcards, limit/offset, includefield, and the facility scope."""

from __future__ import annotations

from io import BytesIO
from xml.etree import ElementTree

import pytest
import requests

from cloudpacs.dicomweb.multipart import parse_media_type, read_parts
from tests.dicomweb_support import client_for, token_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def tech(live_server, technologist, archive):
    return client_for(live_server, technologist)


@pytest.fixture
def reader(live_server, radiologist, archive):
    return client_for(live_server, radiologist, scheme="Bearer")


def study_uids(results: list[dict]) -> set[str]:
    return {item["0020000D"]["Value"][0] for item in results}


def test_a_technologist_finds_only_their_townships_studies(tech, archive):
    found = study_uids(tech.search_for_studies())
    assert found == {archive.studies[name][0] for name in ("zhang_ct", "li_dx", "wang_j2k")}


def test_a_radiologist_finds_the_studies_of_every_township(reader, archive):
    assert study_uids(reader.search_for_studies()) == {uid for uid, _, _ in archive.studies.values()}


def test_a_study_answer_carries_the_required_attributes(tech, archive):
    (study,) = tech.search_for_studies(search_filters={"PatientID": "P0001"})
    assert study["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "Zhang^San", "Ideographic": "张^三"}]}
    assert study["00080020"]["Value"] == ["20250901"]
    assert study["00080030"]["Value"] == ["101500"]
    assert study["00080050"]["Value"] == ["ACC001"]
    assert study["00080061"]["Value"] == ["CT"]
    assert study["00100020"]["Value"] == ["P0001"]
    assert study["00100030"]["Value"] == ["19600101"]
    assert study["00100040"]["Value"] == ["M"]
    assert study["0020000D"]["Value"] == [archive.studies["zhang_ct"][0]]
    assert study["00200010"]["Value"] == ["1"]
    assert study["00201206"]["Value"] == [1]
    assert study["00201208"]["Value"] == [3]
    assert study["00081190"]["Value"][0].endswith(f"/dicomweb/studies/{archive.studies['zhang_ct'][0]}")
    assert "00080090" in study


PATIENT_NAME_CASES = [
    ("张*", {"zhang_ct"}),
    ("张三", {"zhang_ct"}),
    ("张^三", {"zhang_ct"}),
    ("*三", {"zhang_ct"}),
    ("?^三", {"zhang_ct"}),
    ("zhang*", {"zhang_ct"}),
    ("ZHANG^SAN", {"zhang_ct"}),
    ("Zhang^San", {"zhang_ct"}),
    ("Zhang^San=张^三", {"zhang_ct"}),
    ("Zh?ng*", {"zhang_ct"}),
    ("*i*", {"li_dx"}),
    ("王*", {"wang_j2k"}),
    ("Zhang", set()),
    ("Zhao*", set()),
]


def test_it_matches_patient_names_with_wildcards_in_every_group(tech, archive):
    for name, expected in PATIENT_NAME_CASES:
        found = study_uids(tech.search_for_studies(search_filters={"PatientName": name}))
        assert found == {archive.studies[key][0] for key in expected}, name


def test_a_chinese_wildcard_stays_within_the_technologists_township(reader, tech, archive):
    everywhere = study_uids(reader.search_for_studies(search_filters={"PatientName": "张*"}))
    assert everywhere == {archive.studies["zhang_ct"][0], archive.studies["other_zhang"][0]}
    assert study_uids(tech.search_for_studies(search_filters={"PatientName": "张*"})) == {
        archive.studies["zhang_ct"][0]
    }


STUDY_DATE_CASES = [
    ("20250901", {"zhang_ct"}),
    ("20250901-20251231", {"zhang_ct", "li_dx"}),
    ("-20250901", {"zhang_ct", "wang_j2k"}),
    ("20251001-", {"li_dx"}),
    ("20240101", set()),
]


def test_it_matches_study_dates_and_ranges(tech, archive):
    for value, expected in STUDY_DATE_CASES:
        found = study_uids(tech.search_for_studies(search_filters={"StudyDate": value}))
        assert found == {archive.studies[key][0] for key in expected}, value


def test_it_matches_study_times_and_ranges(tech, archive, ct_modality, tmp_path, live_server, technologist):
    # Study Time is a required matching key of QIDO-RS (PS3.18 Table 10.6.1-5), matched
    # as C-FIND matches it (PS3.4 C.2.2.2.5): a single time names its whole minute or hour.
    import requests

    from tests.dicomweb_support import ingest, token_for
    from tests.factories import make_dataset

    night = ingest(make_dataset(patient_id="P0009", StudyTime="221030"), ct_modality, tmp_path / "night")
    night_uid = night.series.study.study_uid
    day = {archive.studies[key][0] for key in ("zhang_ct", "li_dx", "wang_j2k")}  # all at 10:15:00
    cases = [
        ("2200-", {night_uid}),
        ("-1200", day),
        ("1015", day),
        ("22", {night_uid}),
        ("221030", {night_uid}),
        ("0000-0600", set()),
        ("1000-2300", day | {night_uid}),
        ("*", day | {night_uid}),
    ]
    for value, expected in cases:
        assert study_uids(tech.search_for_studies(search_filters={"StudyTime": value})) == expected, value
    response = requests.get(
        live_server.url + "/dicomweb/studies",
        params={"StudyTime": "25"},
        headers={"Authorization": f"Token {token_for(technologist)}"},
        timeout=10,
    )
    assert response.status_code == 400
    assert "Warning" not in response.headers or "StudyTime" not in response.headers["Warning"]


def test_it_matches_accession_numbers_patient_ids_and_uid_lists(tech, archive):
    assert study_uids(tech.search_for_studies(search_filters={"AccessionNumber": "ACC002"})) == {
        archive.studies["li_dx"][0]
    }
    assert study_uids(tech.search_for_studies(search_filters={"AccessionNumber": "ACC00*"})) == {
        archive.studies[key][0] for key in ("zhang_ct", "li_dx", "wang_j2k")
    }
    assert study_uids(tech.search_for_studies(search_filters={"PatientID": "P0003"})) == {
        archive.studies["wang_j2k"][0]
    }
    wanted = [archive.studies["zhang_ct"][0], archive.studies["wang_j2k"][0], archive.studies["other_zhang"][0]]
    found = study_uids(tech.search_for_studies(search_filters={"StudyInstanceUID": ",".join(wanted)}))
    assert found == set(wanted[:2])


def test_it_matches_modalities_in_study(tech, archive):
    assert study_uids(tech.search_for_studies(search_filters={"ModalitiesInStudy": "DX"})) == {
        archive.studies["li_dx"][0]
    }
    assert study_uids(tech.search_for_studies(search_filters={"ModalitiesInStudy": "CT"})) == {
        archive.studies["zhang_ct"][0],
        archive.studies["wang_j2k"][0],
    }


def test_no_match_is_answered_204_and_read_as_empty(tech, live_server, technologist, archive):
    import requests

    from tests.dicomweb_support import token_for

    response = requests.get(
        live_server.url + "/dicomweb/studies",
        params={"PatientID": "nobody"},
        headers={"Authorization": f"Token {token_for(technologist)}"},
        timeout=10,
    )
    assert response.status_code == 204
    assert response.content == b""
    assert tech.search_for_studies(search_filters={"PatientID": "nobody"}) == []


def test_limit_and_offset_page_through_the_studies_newest_first(tech, archive):
    first = tech.search_for_studies(limit=2)
    second = tech.search_for_studies(limit=2, offset=2)
    assert [s["00080020"]["Value"][0] for s in first] == ["20251015", "20250901"]
    assert [s["00080020"]["Value"][0] for s in second] == ["20250820"]
    assert tech.search_for_studies(limit=2, offset=3) == []


def test_includefield_adds_attributes_and_all_adds_every_indexed_one(tech, archive):
    (plain,) = tech.search_for_studies(search_filters={"PatientID": "P0001"})
    assert "00081030" not in plain
    (described,) = tech.search_for_studies(search_filters={"PatientID": "P0001"}, fields=["StudyDescription"])
    assert described["00081030"]["Value"] == ["头颅平扫"]
    (everything,) = tech.search_for_studies(search_filters={"PatientID": "P0001"}, fields=["all"])
    assert everything["00080080"]["Value"] == ["Test Township Health Centre"]
    assert everything["00081030"]["Value"] == ["头颅平扫"]
    # In the order of their tags (PS3.18 F.2.2): the included ones came after the rest.
    assert list(everything) == sorted(everything)


def test_a_matching_key_comes_back_in_each_answer_as_an_included_one_does(tech, archive):
    # PS3.18 10.6.3.3.1: "all other Study level Attributes passed as match ... parameters".
    (study,) = tech.search_for_studies(search_filters={"StudyDescription": "头颅*"})
    assert study["00081030"]["Value"] == ["头颅平扫"]
    study_uid, _series_uid, _ = archive.studies["zhang_ct"]
    (series,) = tech.search_for_series(study_instance_uid=study_uid, search_filters={"BodyPartExamined": ""})
    assert "00180015" in series
    assert list(series) == sorted(series)


def test_a_search_within_a_study_or_series_answers_with_the_higher_attributes_it_names(tech, archive):
    # PS3.18 10.6.3.3.2 and 10.6.3.3.3: "Series or Study Level Attributes passed as
    # includefield parameters"; those not named stay out.
    study_uid, series_uid, _ = archive.studies["zhang_ct"]
    (series,) = tech.search_for_series(study_instance_uid=study_uid, fields=["PatientID", "StudyDescription"])
    assert series["00100020"]["Value"] == ["P0001"]
    assert series["00081030"]["Value"] == ["头颅平扫"]
    assert "00100010" not in series
    assert list(series) == sorted(series)
    first = tech.search_for_instances(
        study_instance_uid=study_uid, series_instance_uid=series_uid, fields=["AccessionNumber", "Modality"]
    )[0]
    assert first["00080050"]["Value"] == ["ACC001"]
    assert first["00080060"]["Value"] == ["CT"]
    assert "00100020" not in first
    assert "0008103E" not in first
    in_study = tech.search_for_instances(study_instance_uid=study_uid, fields=["PatientID"])[0]
    assert in_study["00100020"]["Value"] == ["P0001"]
    assert "00080060" in in_study  # the series' attributes come whole within a study


def test_a_search_answers_in_xml_when_asked_for_it(live_server, technologist, archive):
    # PS3.18 requires multipart/related; type="application/dicom+xml" beside DICOM JSON.
    session = requests.Session()
    session.headers["Authorization"] = f"Token {token_for(technologist)}"
    url = f"{live_server.url}/dicomweb/studies?PatientID=P0001&includefield=StudyDescription"
    as_json = session.get(url, timeout=10).json()
    response = session.get(url, headers={"Accept": 'multipart/related; type="application/dicom+xml"'}, timeout=10)
    media_type, params = parse_media_type(response.headers["Content-Type"])
    assert (response.status_code, media_type, params["type"]) == (200, "multipart/related", "application/dicom+xml")
    (part,) = read_parts(BytesIO(response.content), params["boundary"])
    root = ElementTree.fromstring(part.file.read())  # noqa: S314 - the platform's own answer
    assert [element.get("tag") for element in root.findall("DicomAttribute")] == list(as_json[0])
    assert root.findtext("DicomAttribute[@tag='00081030']/Value") == "头颅平扫"
    assert root.findtext("DicomAttribute[@tag='00100010']/PersonName/Ideographic/FamilyName") == "张"
    assert session.get(url, headers={"Accept": "application/dicom+xml"}, timeout=10).status_code == 406


def test_fuzzymatching_is_accepted_and_ignored(tech, archive):
    assert len(tech.search_for_studies(fuzzymatching=True, search_filters={"PatientName": "张*"})) == 1


def test_fuzzymatching_asked_for_is_answered_with_the_warning_that_only_literal_matching_was_done(
    live_server, technologist, archive
):
    # PS3.18 8.3.4.2: an origin server without fuzzy matching "shall include" this Warning.
    url = f"{live_server.url}/dicomweb/studies"
    headers = {"Authorization": f"Token {token_for(technologist)}"}
    for fuzzy, expected in (("true", 200), ("false", 200)):
        response = requests.get(url, params={"PatientName": "张*", "fuzzymatching": fuzzy}, headers=headers, timeout=10)
        assert response.status_code == expected
        said = response.headers.get("Warning", "")
        literal = "The fuzzymatching parameter is not supported. Only literal matching has been performed."
        assert (literal in said) == (fuzzy == "true")
    warning = requests.get(url, params={"fuzzymatching": "true"}, headers=headers, timeout=10).headers["Warning"]
    assert warning.startswith(f'299 {live_server.url}/dicomweb "')


def test_it_searches_series_in_a_study_and_across_studies(tech, archive):
    study_uid, series_uid, _ = archive.studies["zhang_ct"]
    (series,) = tech.search_for_series(study_instance_uid=study_uid)
    assert series["0020000E"]["Value"] == [series_uid]
    assert series["00080060"]["Value"] == ["CT"]
    assert series["00201209"]["Value"] == [3]
    assert series["00200011"]["Value"] == [1]
    assert series["00081190"]["Value"][0].endswith(f"/studies/{study_uid}/series/{series_uid}")
    dx = tech.search_for_series(search_filters={"Modality": "DX"})
    assert [item["0020000E"]["Value"][0] for item in dx] == [archive.studies["li_dx"][1]]
    # Across studies, the study's attributes come along.
    assert dx[0]["00100020"]["Value"] == ["P0002"]
    by_uid = tech.search_for_series(search_filters={"SeriesInstanceUID": series_uid})
    assert [item["0020000D"]["Value"][0] for item in by_uid] == [study_uid]
    # An empty Series Number is universal matching (it was 400 'not an integer').
    everything = tech.search_for_series(study_instance_uid=study_uid, search_filters={"SeriesNumber": ""})
    assert [item["0020000E"]["Value"][0] for item in everything] == [series_uid]
    assert tech.search_for_series(search_filters={"PatientName": "王*"})[0]["0020000E"]["Value"] == [
        archive.studies["wang_j2k"][1]
    ]


def test_it_searches_instances_at_every_level(tech, archive):
    study_uid, series_uid, sop_uids = archive.studies["zhang_ct"]
    in_series = tech.search_for_instances(study_instance_uid=study_uid, series_instance_uid=series_uid)
    assert [item["00080018"]["Value"][0] for item in in_series] == sop_uids
    assert [item["00200013"]["Value"][0] for item in in_series] == [1, 2, 3]
    assert in_series[0]["00280010"]["Value"] == [64]
    assert in_series[0]["00280011"]["Value"] == [64]
    assert in_series[0]["00080016"]["Value"] == ["1.2.840.10008.5.1.4.1.1.2"]
    in_study = tech.search_for_instances(study_instance_uid=study_uid)
    assert len(in_study) == 3
    (one,) = tech.search_for_instances(search_filters={"SOPInstanceUID": sop_uids[1]})
    assert one["0020000D"]["Value"] == [study_uid]
    assert one["00100020"]["Value"] == ["P0001"]
    (frames,) = tech.search_for_instances(search_filters={"PatientID": "P0003"})
    assert frames["00280008"]["Value"] == [2]
    assert len(tech.search_for_instances(search_filters={"Modality": "CT"}, limit=2)) == 2


def test_a_search_is_one_query_whatever_the_page_size(
    live_server, technologist, archive, django_assert_max_num_queries
):
    from django.test import Client

    from tests.dicomweb_support import token_for

    client = Client(HTTP_AUTHORIZATION=f"Token {token_for(technologist)}", HTTP_ACCEPT="*/*")
    # token lookup, then the page, then the instances not counted yet of each level the
    # answers carry counts of (cloudpacs.counts); no query per row.
    with django_assert_max_num_queries(4):
        assert client.get("/dicomweb/studies").status_code == 200
    with django_assert_max_num_queries(5):
        assert client.get("/dicomweb/instances").status_code == 200
    with django_assert_max_num_queries(5):
        assert client.get("/dicomweb/series").status_code == 200


def test_an_unsupported_key_is_ignored_with_a_warning(live_server, technologist, archive):
    from django.test import Client

    from tests.dicomweb_support import token_for

    client = Client(HTTP_AUTHORIZATION=f"Token {token_for(technologist)}", HTTP_ACCEPT="*/*")
    response = client.get("/dicomweb/studies", {"PatientWeight": "70"})
    assert response.status_code == 200
    assert "PatientWeight" in response["Warning"]
    assert client.get("/dicomweb/studies", {"StudyDate": "2025-13-45x"}).status_code == 400
    assert client.get("/dicomweb/studies", {"limit": "-1"}).status_code == 400
    assert client.get("/dicomweb/studies", HTTP_ACCEPT="application/dicom+xml").status_code == 406
