"""Query/Retrieve over real sockets: dcmtk `findscu`, `movescu`, `getscu` and pynetdicom
SCUs against the receiver, as a township's or the county's workstation finds and fetches
priors. The move destination is a pynetdicom storage SCP on 127.0.0.1 (dcmtk 3.6.7's
storescp binds every address)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom.pdu_primitives import SOPClassExtendedNegotiation
from pynetdicom.sop_class import (
    CTImageStorage,
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from facilities.models import ApplicationEntity, AuditEvent, ExamKind, Facility, Modality
from tests.dicomweb_support import ingest
from tests.factories import make_consult, make_dataset, make_modality

pytestmark = pytest.mark.django_db(transaction=True)

DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


@dataclass
class Archive:
    wu: Any  # Xuanwo, sent for reading, 2 series (3 + 2 CT instances)
    zhang: Any  # Xuanwo, kept at the township
    li: Any  # Pingliang, sent for reading
    series: dict[str, list[str]] = field(default_factory=dict)  # series UID -> SOP instance UIDs


def store_study(console: Modality, tmp: Path, *, series_sizes: list[int], **keys: Any) -> tuple[Any, dict]:
    study_uid = generate_uid()
    series: dict[str, list[str]] = {}
    study = None
    for number, size in enumerate(series_sizes, start=1):
        series_uid = generate_uid()
        for index in range(size):
            ds = make_dataset(
                study_uid=study_uid,
                series_uid=series_uid,
                instance_number=index + 1,
                SeriesNumber=number,
                **keys,
            )
            instance = ingest(ds, console, tmp)
            series.setdefault(series_uid, []).append(str(ds.SOPInstanceUID))
            study = instance.series.study
    return study, series


@pytest.fixture
def archive(township, other_township, county, ct_modality, tmp_path) -> Archive:
    from datetime import date

    pingliang = make_modality(other_township, ExamKind.DR, "PINGLIANG_DR")
    wu, wu_series = store_study(
        ct_modality,
        tmp_path / "in",
        series_sizes=[3, 2],
        patient_id="XW001",
        patient_name="Wu^Chao=吴^超",
        character_set="ISO_IR 192",
        study_date=date(2025, 9, 1),
        AccessionNumber="ACC001",
    )
    zhang, _ = store_study(
        ct_modality,
        tmp_path / "in",
        series_sizes=[1],
        patient_id="XW002",
        patient_name="Zhang^San=张^三",
        character_set="ISO_IR 192",
        study_date=date(2025, 8, 15),
        AccessionNumber="ACC002",
    )
    li, _ = store_study(
        pingliang,
        tmp_path / "in",
        series_sizes=[1],
        patient_id="PL001",
        patient_name="Li^Si=李^四",
        character_set="ISO_IR 192",
        study_date=date(2025, 9, 2),
        AccessionNumber="ACC003",
        modality="DX",
        sop_class_uid=CTImageStorage,
    )
    make_consult(township, study=wu)
    make_consult(other_township, study=li, kind=ExamKind.DR)
    return Archive(wu=wu, zhang=zhang, li=li, series=wu_series)


def entity(facility: Facility, ae_title: str, **fields: Any) -> ApplicationEntity:
    fields.setdefault("may_query", True)
    fields.setdefault("may_retrieve", True)
    return ApplicationEntity.objects.create(
        ae_title=ae_title, role=ApplicationEntity.Role.WORKSTATION, facility=facility, **fields
    )


@pytest.fixture
def county_ws(county) -> ApplicationEntity:
    return entity(county, "COUNTY_WS")


@pytest.fixture
def township_ws(township) -> ApplicationEntity:
    return entity(township, "XUANWO_WS")


@dataclass
class StorageSCP:
    address: tuple[str, int]
    received: list[Dataset]
    callers: list[str]


@pytest.fixture
def storage_scp() -> Iterator[StorageSCP]:
    """A pynetdicom storage SCP on 127.0.0.1: the workstation a C-MOVE sends to."""
    received: list[Dataset] = []
    callers: list[str] = []

    def on_store(event: evt.Event) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        received.append(ds)
        callers.append(str(event.assoc.requestor.ae_title).strip())
        return 0x0000

    ae = AE(ae_title="DEST_WS")
    ae.add_supported_context(CTImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        yield StorageSCP(server.server_address[:2], received, callers)
    finally:
        server.shutdown()


@pytest.fixture
def destination(county, storage_scp) -> ApplicationEntity:
    host, port = storage_scp.address
    return entity(
        county, "DEST_WS", may_query=False, may_retrieve=False, is_move_destination=True, host=host, port=port
    )


def scu(title: str) -> AE:
    ae = AE(ae_title=title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    ae.add_requested_context(PatientRootQueryRetrieveInformationModelFind)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    return ae


def query(level: str, **keys: Any) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def find(
    address: tuple[str, int],
    calling: str,
    ds: Dataset,
    model: str = StudyRootQueryRetrieveInformationModelFind,
    ext_neg: list[Any] | None = None,
) -> tuple[list[Dataset], int]:
    assoc = scu(calling).associate(*address, ae_title="CLOUDPACS", ext_neg=ext_neg)
    assert assoc.is_established
    answers: list[Dataset] = []
    final = -1
    try:
        for status, identifier in assoc.send_c_find(ds, model):
            if status.Status in (0xFF00, 0xFF01):
                answers.append(identifier)
            else:
                final = int(status.Status)
    finally:
        assoc.release()
    return answers, final


def study_uids(answers: list[Dataset]) -> set[str]:
    return {str(a.StudyInstanceUID) for a in answers}


# --- C-FIND -----------------------------------------------------------------------------


def test_a_county_workstation_finds_the_studies_sent_for_reading_and_a_township_its_own(
    receiver, archive, county_ws, township_ws
):
    answers, status = find(receiver, "COUNTY_WS", query("STUDY", StudyInstanceUID="", PatientName=""))
    assert status == 0x0000
    assert study_uids(answers) == {archive.wu.study_uid, archive.li.study_uid}
    answers, status = find(receiver, "XUANWO_WS", query("STUDY", StudyInstanceUID=""))
    assert study_uids(answers) == {archive.wu.study_uid, archive.zhang.study_uid}


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ({"PatientName": "吴*"}, {"wu"}),
        ({"PatientName": "吴超"}, {"wu"}),
        ({"PatientName": "吴^超"}, {"wu"}),
        ({"PatientName": "wu*"}, {"wu"}),
        ({"PatientName": "L?^SI"}, {"li"}),
        ({"PatientName": "*"}, {"wu", "li"}),
        ({"PatientID": "XW001"}, {"wu"}),
        ({"PatientID": "XW00*"}, {"wu"}),
        ({"AccessionNumber": "ACC00?"}, {"wu", "li"}),
        ({"StudyDate": "20250901"}, {"wu"}),
        ({"StudyDate": "20250902-"}, {"li"}),
        ({"StudyDate": "-20250901"}, {"wu"}),
        ({"StudyDate": "20250801-20250831"}, set()),
        ({"StudyTime": "100000-110000"}, {"wu", "li"}),
        ({"StudyTime": "-090000"}, set()),
        ({"ModalitiesInStudy": "DX"}, {"li"}),
        ({"StudyInstanceUID": "WU\\LI"}, {"wu", "li"}),
    ],
)
def test_study_level_matching_follows_ps34_c222(receiver, archive, county_ws, keys, expected):
    names = {"wu": archive.wu.study_uid, "li": archive.li.study_uid, "zhang": archive.zhang.study_uid}
    ds = query("STUDY", StudyInstanceUID="", PatientName="")
    for keyword, value in keys.items():
        if keyword == "StudyInstanceUID":
            value = "\\".join(names[name.lower()] for name in value.split("\\"))
        setattr(ds, keyword, value)
    answers, status = find(receiver, "COUNTY_WS", ds)
    assert status == 0x0000
    assert study_uids(answers) == {names[name] for name in expected}


def test_an_answer_carries_the_return_keys_asked_for_and_no_others(receiver, archive, county_ws):
    ds = query("STUDY", PatientID="XW001", PatientName="", StudyDate="", NumberOfStudyRelatedInstances="", StudyID="")
    ds.ModalitiesInStudy = ""
    ds.PatientComments = ""
    [answer], status = find(receiver, "COUNTY_WS", ds)
    assert status == 0x0000
    assert str(answer.PatientName) == "Wu^Chao=吴^超"
    assert answer.StudyDate == "20250901"
    assert int(answer.NumberOfStudyRelatedInstances) == 5
    assert list(answer.ModalitiesInStudy) == ["CT"] or answer.ModalitiesInStudy == "CT"
    assert answer.QueryRetrieveLevel == "STUDY"
    assert "PatientComments" in answer and not answer.PatientComments
    assert "AccessionNumber" not in answer and "StudyInstanceUID" not in answer


def test_series_and_image_levels_answer_within_the_study(receiver, archive, county_ws):
    answers, status = find(
        receiver,
        "COUNTY_WS",
        query("SERIES", StudyInstanceUID=archive.wu.study_uid, SeriesInstanceUID="", NumberOfSeriesRelatedInstances=""),
    )
    assert status == 0x0000
    assert {str(a.SeriesInstanceUID): int(a.NumberOfSeriesRelatedInstances) for a in answers} == {
        uid: len(sops) for uid, sops in archive.series.items()
    }
    series_uid = next(iter(archive.series))
    answers, status = find(
        receiver,
        "COUNTY_WS",
        query(
            "IMAGE",
            StudyInstanceUID=archive.wu.study_uid,
            SeriesInstanceUID=series_uid,
            SOPInstanceUID="",
            InstanceNumber="",
        ),
    )
    assert sorted(str(a.SOPInstanceUID) for a in answers) == sorted(archive.series[series_uid])
    assert sorted(int(a.InstanceNumber) for a in answers) == [1, 2, 3]


def test_an_image_level_query_for_another_townships_study_finds_nothing(receiver, archive, township_ws):
    answers, status = find(
        receiver, "XUANWO_WS", query("IMAGE", StudyInstanceUID=archive.li.study_uid, SOPInstanceUID="")
    )
    assert (answers, status) == ([], 0x0000)


def test_patient_root_answers_patients_and_their_studies(receiver, archive, township_ws):
    model = PatientRootQueryRetrieveInformationModelFind
    answers, status = find(
        receiver, "XUANWO_WS", query("PATIENT", PatientID="", PatientName="", NumberOfPatientRelatedStudies=""), model
    )
    assert status == 0x0000
    assert {str(a.PatientID): int(a.NumberOfPatientRelatedStudies) for a in answers} == {"XW001": 1, "XW002": 1}
    answers, _ = find(receiver, "XUANWO_WS", query("PATIENT", PatientName="张*", PatientID=""), model)
    assert [str(a.PatientID) for a in answers] == ["XW002"]
    answers, _ = find(receiver, "XUANWO_WS", query("STUDY", PatientID="XW002", StudyInstanceUID=""), model)
    assert study_uids(answers) == {archive.zhang.study_uid}


def test_the_study_root_has_no_patient_level_and_a_bad_date_is_refused(receiver, archive, county_ws):
    answers, status = find(receiver, "COUNTY_WS", query("PATIENT", PatientID=""))
    assert (answers, status) == ([], 0xC000)
    answers, status = find(receiver, "COUNTY_WS", query("STUDY", StudyDate="2025-09-xx"))
    assert (answers, status) == ([], 0xC000)


def test_answers_come_in_gb18030_when_the_query_asks(receiver, archive, county_ws):
    ds = query("STUDY", PatientID="XW001", PatientName="")
    ds.SpecificCharacterSet = "GB18030"
    [answer], _ = find(receiver, "COUNTY_WS", ds)
    assert answer.SpecificCharacterSet == "GB18030"
    assert str(answer.PatientName) == "Wu^Chao=吴^超"


def raw_value(answer: Dataset, keyword: str) -> bytes:
    """A value of an answer as it came over the wire, before pydicom decodes it."""
    return bytes(answer.get_item(keyword, keep_deferred=True).value)


def test_answers_come_in_the_querys_own_character_set_when_their_text_fits_it(
    receiver, archive, township_ws, ct_modality, tmp_path
):
    # A Latin-1 workstation (ISO_IR 100) that may not read UTF-8: a name Latin-1 holds is
    # answered in Latin-1; a Chinese one cannot be, and comes in UTF-8, saying so.
    ingest(
        make_dataset(patient_id="LAT1", patient_name="Müller^Jürgen", character_set="ISO_IR 100"),
        ct_modality,
        tmp_path / "latin",
    )
    ds = query("STUDY", PatientName="Müller*", StudyInstanceUID="")
    ds.SpecificCharacterSet = "ISO_IR 100"
    [answer], status = find(receiver, "XUANWO_WS", ds)
    assert status == 0x0000
    assert answer.SpecificCharacterSet == "ISO_IR 100"
    assert raw_value(answer, "PatientName").rstrip() == "Müller^Jürgen".encode("latin-1")
    ds = query("STUDY", PatientID="XW001", PatientName="")
    ds.SpecificCharacterSet = "ISO_IR 100"
    [answer], _ = find(receiver, "XUANWO_WS", ds)
    assert answer.SpecificCharacterSet == "ISO_IR 192"
    assert str(answer.PatientName) == "Wu^Chao=吴^超"


def test_a_gbk_query_gets_utf8_for_a_name_gbk_cannot_hold(receiver, township_ws, ct_modality, tmp_path):
    # 䶮 (CJK extension A) is in GB18030 and Unicode, not in GBK: written in GBK it would
    # become "?".
    ingest(
        make_dataset(patient_id="GBK1", patient_name="Liu^Yan=刘^䶮", character_set="GB18030"),
        ct_modality,
        tmp_path / "gbk",
    )
    ingest(
        make_dataset(patient_id="GBK2", patient_name="Liu^Bei=刘^备", character_set="GB18030"),
        ct_modality,
        tmp_path / "gbk",
    )
    ds = query("STUDY", PatientName="刘*", PatientID="")
    ds.SpecificCharacterSet = "GBK"
    answers, status = find(receiver, "XUANWO_WS", ds)
    assert status == 0x0000
    by_id = {str(answer.PatientID): answer for answer in answers}
    assert by_id["GBK1"].SpecificCharacterSet == "ISO_IR 192"
    assert str(by_id["GBK1"].PatientName) == "Liu^Yan=刘^䶮"
    assert by_id["GBK2"].SpecificCharacterSet == "GBK"
    assert raw_value(by_id["GBK2"], "PatientName").rstrip() == "Liu^Bei=刘^备".encode("gbk")


def find_options(flags: bytes, model: str = StudyRootQueryRetrieveInformationModelFind) -> list[Any]:
    """A SOP Class Extended Negotiation item for a FIND class (PS3.4 C.5.1.1.1): relational
    queries, combined date-time, fuzzy names, timezone adjustment, multi-frame conversion."""
    item = SOPClassExtendedNegotiation()
    item.sop_class_uid = model
    item.service_class_application_information = flags
    return [item]


def test_the_find_classes_negotiate_combined_datetime_and_fuzzy_names_only(receiver, archive, county_ws):
    assoc = scu("COUNTY_WS").associate(*receiver, ae_title="CLOUDPACS", ext_neg=find_options(b"\x01\x01\x01\x01\x01"))
    assert assoc.is_established
    try:
        agreed = assoc.acceptor.sop_class_extended
    finally:
        assoc.release()
    assert agreed == {StudyRootQueryRetrieveInformationModelFind: b"\x00\x01\x01\x00\x00"}
    # Asked only for relational queries: answered, refused.
    assoc = scu("COUNTY_WS").associate(*receiver, ae_title="CLOUDPACS", ext_neg=find_options(b"\x01"))
    try:
        assert assoc.acceptor.sop_class_extended == {StudyRootQueryRetrieveInformationModelFind: b"\x00"}
    finally:
        assoc.release()


@pytest.mark.parametrize(
    ("date_key", "time_key", "separately", "combined"),
    [
        # 1 Sep 10:00 to 2 Sep 10:00:59: Wu (1 Sep 10:15) inside, Li (2 Sep 10:15) after.
        ("20250901-20250902", "1000-1000", set(), {"wu"}),
        # 31 Aug 22:00 to 2 Sep 08:00: a night shift's range; Wu on the day between.
        ("20250831-20250902", "2200-0800", set(), {"wu"}),
        ("20250901-", "1100-", set(), {"li"}),
        ("-20250902", "-1100", {"wu", "li"}, {"wu", "li"}),
        # One day and a time range: the same either way.
        ("20250902", "1000-1100", {"li"}, {"li"}),
    ],
)
def test_study_date_and_time_match_as_one_range_when_negotiated(
    receiver, archive, county_ws, date_key, time_key, separately, combined
):
    names = {archive.wu.study_uid: "wu", archive.li.study_uid: "li", archive.zhang.study_uid: "zhang"}
    ds = query("STUDY", StudyInstanceUID="", StudyDate=date_key, StudyTime=time_key)
    answers, status = find(receiver, "COUNTY_WS", ds)
    assert status == 0x0000
    assert {names[uid] for uid in study_uids(answers)} == separately
    answers, status = find(receiver, "COUNTY_WS", ds, ext_neg=find_options(b"\x00\x01"))
    assert status == 0x0000
    assert {names[uid] for uid in study_uids(answers)} == combined


def test_a_bad_time_in_a_combined_range_is_refused(receiver, archive, county_ws):
    ds = query("STUDY", StudyInstanceUID="", StudyDate="20250901-20250902", StudyTime="25xx-")
    answers, status = find(receiver, "COUNTY_WS", ds, ext_neg=find_options(b"\x00\x01"))
    assert (answers, status) == ([], 0xC000)


def test_a_find_matching_more_than_the_cap_answers_the_newest_and_ends_with_cancel(
    receiver, archive, county_ws, settings
):
    settings.DICOM_FIND_MAX_RESULTS = 1
    answers, status = find(receiver, "COUNTY_WS", query("STUDY", StudyInstanceUID=""))
    assert status == 0xFE00
    assert study_uids(answers) == {archive.li.study_uid}
    # At the cap exactly: every match, and Success.
    answers, status = find(receiver, "COUNTY_WS", query("STUDY", StudyInstanceUID="", PatientID="XW001"))
    assert (len(answers), status) == (1, 0x0000)
    settings.DICOM_FIND_MAX_RESULTS = 0
    answers, status = find(receiver, "COUNTY_WS", query("STUDY", StudyInstanceUID=""))
    assert (len(answers), status) == (2, 0x0000)


def test_a_workstation_without_query_permission_is_refused(receiver, archive, county):
    entity(county, "NOQUERY_WS", may_query=False)
    answers, status = find(receiver, "NOQUERY_WS", query("STUDY", StudyInstanceUID=""))
    assert (answers, status) == ([], 0x0124)


def dcmtk(tool: str, *args: str, timeout: int = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool, *args], env=DCMTK_ENV, capture_output=True, text=True, timeout=timeout)


def test_findscu_finds_studies_by_chinese_name(receiver, archive, county_ws, tmp_path):
    out = tmp_path / "rsp"
    out.mkdir()
    result = dcmtk(
        "findscu",
        "-S",
        "-aet",
        "COUNTY_WS",
        "-aec",
        "CLOUDPACS",
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        "SpecificCharacterSet=ISO_IR 192",
        "-k",
        "PatientName=吴*",
        "-k",
        "StudyInstanceUID",
        "-k",
        "StudyDate",
        "-X",
        "-od",
        str(out),
        *map(str, receiver),
    )
    assert result.returncode == 0, result.stderr + result.stdout
    answers = [dcmread(path) for path in sorted(out.glob("rsp*.dcm"))]
    assert study_uids(answers) == {archive.wu.study_uid}
    assert str(answers[0].PatientName) == "Wu^Chao=吴^超"


def test_findscu_at_the_patient_root_from_the_township(receiver, archive, township_ws, tmp_path):
    out = tmp_path / "rsp"
    out.mkdir()
    result = dcmtk(
        "findscu", "-P", "-aet", "XUANWO_WS", "-aec", "CLOUDPACS",
        "-k", "QueryRetrieveLevel=PATIENT", "-k", "PatientID", "-k", "PatientName",
        "-X", "-od", str(out), *map(str, receiver),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + result.stdout
    assert sorted(str(dcmread(p).PatientID) for p in out.glob("rsp*.dcm")) == ["XW001", "XW002"]


# --- C-MOVE -----------------------------------------------------------------------------


def move(address: tuple[str, int], calling: str, ds: Dataset, destination: str) -> list[Dataset]:
    assoc = scu(calling).associate(*address, ae_title="CLOUDPACS")
    assert assoc.is_established
    try:
        return [status for status, _ in assoc.send_c_move(ds, destination, StudyRootQueryRetrieveInformationModelMove)]
    finally:
        assoc.release()


def test_a_series_moves_to_a_registered_destination_and_is_audited(
    storage_backend, receiver, archive, county_ws, destination, storage_scp
):
    series_uid = next(iter(archive.series))
    statuses = move(
        receiver, "COUNTY_WS", query("SERIES", StudyInstanceUID=archive.wu.study_uid, SeriesInstanceUID=series_uid),
        "DEST_WS",
    )  # fmt: skip
    final = statuses[-1]
    assert final.Status == 0x0000
    assert final.NumberOfCompletedSuboperations == 3
    assert sorted(str(ds.SOPInstanceUID) for ds in storage_scp.received) == sorted(archive.series[series_uid])
    assert set(storage_scp.callers) == {"CLOUDPACS"}
    [event] = AuditEvent.objects.filter(action="cloudpacs.study.retrieved")
    assert event.object_id == archive.wu.study_uid
    assert event.detail == {
        "via": "C-MOVE",
        "calling_ae": "COUNTY_WS",
        "destination": "DEST_WS",
        "instances": 3,
    }


def test_moves_one_after_another_lose_no_sub_operation(receiver, archive, county_ws, destination, storage_scp):
    # pynetdicom's association loop could take a sub-operation's C-STORE response from
    # under send_c_store (dicomnode.reactor.wait_while_paused); seen under load.
    series_uid = next(iter(archive.series))
    ds = query("SERIES", StudyInstanceUID=archive.wu.study_uid, SeriesInstanceUID=series_uid)
    for _ in range(8):
        final = move(receiver, "COUNTY_WS", ds, "DEST_WS")[-1]
        assert (final.Status, final.NumberOfCompletedSuboperations) == (0x0000, 3)
    assert len(storage_scp.received) == 8 * 3


def test_a_move_to_an_unknown_or_unregistered_destination_is_refused_a801(
    receiver, archive, county_ws, township_ws, storage_scp
):
    ds = query("STUDY", StudyInstanceUID=archive.wu.study_uid)
    assert [s.Status for s in move(receiver, "COUNTY_WS", ds, "NOWHERE")] == [0xA801]
    # Registered, but not as a move destination.
    assert [s.Status for s in move(receiver, "COUNTY_WS", ds, "XUANWO_WS")] == [0xA801]
    assert storage_scp.received == []
    assert not AuditEvent.objects.filter(action="cloudpacs.study.retrieved").exists()


def test_a_move_of_another_townships_study_sends_nothing(receiver, archive, township_ws, destination, storage_scp):
    statuses = move(receiver, "XUANWO_WS", query("STUDY", StudyInstanceUID=archive.li.study_uid), "DEST_WS")
    assert statuses[-1].Status == 0x0000
    assert statuses[-1].NumberOfCompletedSuboperations == 0
    assert storage_scp.received == []


def test_an_entity_that_may_not_retrieve_is_offered_no_retrieve_context(receiver, archive, county):
    entity(county, "QUERYONLY_WS", may_retrieve=False)
    assoc = scu("QUERYONLY_WS").associate(*receiver, ae_title="CLOUDPACS")
    assert assoc.is_established
    try:
        accepted = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
        assert StudyRootQueryRetrieveInformationModelFind in accepted
        assert StudyRootQueryRetrieveInformationModelMove not in accepted
        assert StudyRootQueryRetrieveInformationModelGet not in accepted
    finally:
        assoc.release()


def test_movescu_moves_a_study(receiver, archive, county_ws, destination, storage_scp):
    result = dcmtk(
        "movescu", "-S", "-aet", "COUNTY_WS", "-aec", "CLOUDPACS", "-aem", "DEST_WS",
        "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={archive.wu.study_uid}",
        *map(str, receiver),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + result.stdout
    assert len(storage_scp.received) == 5


# A move destination in a process of its own: its sockets are not among the test's.
DESTINATION_SCRIPT = """
import sys
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage

def on_store(event):
    print(event.request.AffectedSOPInstanceUID, flush=True)
    return 0x0000

ae = AE(ae_title="FAR_WS")
ae.add_supported_context(CTImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
print(server.server_address[1], flush=True)
sys.stdin.read()
server.shutdown()
"""


def test_a_move_is_sent_on_a_descriptor_past_1024(receiver, archive, county, county_ws, monkeypatch):
    """The association the receiver opens to a move destination checked its socket with
    pynetdicom's select(), which raises for a descriptor numbered 1024 or more: in a
    receiver holding that many descriptors every sub-operation failed, the connection
    taken for closed. Here the receiver's process holds over 1,100; movescu and the
    destination run in processes of their own."""
    import sys

    from dicomnode import queryretrieve
    from tests.processes import descriptors_past

    destination_process = subprocess.Popen(
        [sys.executable, "-c", DESTINATION_SCRIPT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert destination_process.stdout is not None
    port = int(destination_process.stdout.readline())
    entity(county, "FAR_WS", may_query=False, may_retrieve=False, is_move_destination=True, host="127.0.0.1", port=port)
    opened: list[int] = []

    def record(event: evt.Event) -> None:
        opened.append(event.assoc.dul.socket.socket.fileno())

    monkeypatch.setattr(queryretrieve, "OPENED", [*queryretrieve.OPENED, (evt.EVT_CONN_OPEN, record)])
    try:
        with descriptors_past(1100):
            result = dcmtk(
                "movescu", "-S", "-aet", "COUNTY_WS", "-aec", "CLOUDPACS", "-aem", "FAR_WS",
                "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={archive.wu.study_uid}",
                *map(str, receiver),
            )  # fmt: skip
    finally:
        received, _ = destination_process.communicate("", timeout=30)
    assert len(opened) == 1 and opened[0] >= 1024, opened
    assert result.returncode == 0, result.stderr + result.stdout
    assert sorted(received.split()) == sorted(uid for uids in archive.series.values() for uid in uids)


# --- C-GET ------------------------------------------------------------------------------


def test_a_series_comes_back_on_the_same_association_with_c_get(storage_backend, receiver, archive, county_ws):
    received: list[str] = []

    def on_store(event: evt.Event) -> int:
        received.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    ae = scu("COUNTY_WS")
    role = build_role(CTImageStorage, scp_role=True)
    assoc = ae.associate(*receiver, ae_title="CLOUDPACS", ext_neg=[role], evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    series_uid = next(iter(archive.series))
    try:
        statuses = [
            status
            for status, _ in assoc.send_c_get(
                query("SERIES", StudyInstanceUID=archive.wu.study_uid, SeriesInstanceUID=series_uid),
                StudyRootQueryRetrieveInformationModelGet,
            )
        ]
    finally:
        assoc.release()
    assert statuses[-1].Status == 0x0000
    assert sorted(received) == sorted(archive.series[series_uid])
    event = AuditEvent.objects.get(action="cloudpacs.study.retrieved")
    assert event.detail["via"] == "C-GET" and event.detail["instances"] == 3


def test_a_big_endian_instance_goes_little_endian_to_a_requester_that_takes_only_that(
    receiver, township_ws, ct_modality, tmp_path
):
    # Stored as received in Explicit VR Big Endian (retired in 2004; few workstations take
    # it), such an instance could not be retrieved: pynetdicom converts between the little
    # endian syntaxes but not from big endian, and the sub-operation failed ("No
    # presentation context ... with 'Explicit VR Big Endian'"). Found pushing pydicom's
    # big endian files with storescu and fetching them back with getscu.
    import pydicom.data
    from pydicom.uid import MRImageStorage

    from cloudpacs import storage

    source = dcmread(Path(pydicom.data.__file__).parent / "test_files" / "MR_small_bigendian.dcm")
    instance = ingest(source, ct_modality, tmp_path / "in")
    assert instance.transfer_syntax_uid == "1.2.840.10008.1.2.2"
    received: list[Dataset] = []

    def on_store(event: evt.Event) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        received.append(ds)
        return 0x0000

    ae = AE(ae_title="XUANWO_WS")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(MRImageStorage, [ExplicitVRLittleEndian])
    assoc = ae.associate(
        *receiver,
        ae_title="CLOUDPACS",
        ext_neg=[build_role(MRImageStorage, scp_role=True)],
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    assert assoc.is_established
    try:
        identifier = query("STUDY", StudyInstanceUID=source.StudyInstanceUID)
        statuses = [s for s, _ in assoc.send_c_get(identifier, StudyRootQueryRetrieveInformationModelGet)]
    finally:
        assoc.release()
    assert statuses[-1].Status == 0x0000
    (ds,) = received
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    stored = dcmread(storage.path_for(instance.storage_key))
    assert (ds.pixel_array == stored.pixel_array).all()
    assert (ds.PatientName, ds.Rows, ds.Columns) == (stored.PatientName, stored.Rows, stored.Columns)


def test_getscu_gets_a_study(receiver, archive, county_ws, tmp_path):
    out = tmp_path / "got"
    out.mkdir()
    result = dcmtk(
        "getscu", "-S", "-aet", "COUNTY_WS", "-aec", "CLOUDPACS", "-od", str(out),
        "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={archive.li.study_uid}",
        *map(str, receiver),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + result.stdout
    files = list(out.iterdir())
    assert len(files) == 1
    assert str(dcmread(files[0]).StudyInstanceUID) == archive.li.study_uid


def test_a_get_without_its_unique_key_is_refused(receiver, archive, county_ws):
    ae = scu("COUNTY_WS")
    assoc = ae.associate(*receiver, ae_title="CLOUDPACS", ext_neg=[build_role(CTImageStorage, scp_role=True)])
    try:
        statuses = [
            s.Status
            for s, _ in assoc.send_c_get(query("STUDY", PatientName="*"), StudyRootQueryRetrieveInformationModelGet)
        ]
    finally:
        assoc.release()
    assert statuses == [0xC000]


def test_a_move_sends_each_instance_in_its_stored_syntax_when_one_class_is_stored_in_several(
    receiver, township, ct_modality, township_ws, tmp_path
):
    """Each SOP class was proposed to the destination in one presentation context listing
    every transfer syntax its instances are stored in: the destination accepts one syntax
    per context, so in a study holding RLE and JPEG Secondary Captures every instance of
    the other syntax failed (0xA702 when none got through). pydicom's two files of one
    study, an RLE and a JPEG Baseline one, and a native one besides."""
    from pydicom.data import get_testdata_file
    from pydicom.uid import JPEGBaseline8Bit, RLELossless, SecondaryCaptureImageStorage
    from pynetdicom import ALL_TRANSFER_SYNTAXES

    from cloudpacs.services import ingest_instance

    paths = [Path(get_testdata_file(name)) for name in ("SC_rgb_rle.dcm", "SC_rgb_dcmtk_+eb+cr.dcm")]
    sent = {}
    for path in paths:
        ds = dcmread(path)
        sent[str(ds.SOPInstanceUID)] = ds
        ingest_instance(
            path,
            transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
            sop_class_uid=str(ds.SOPClassUID),
            sop_instance_uid=str(ds.SOPInstanceUID),
            modality=ct_modality,
        )
    native = make_dataset(
        study_uid=str(ds.StudyInstanceUID), patient_id="ID1", sop_class_uid=SecondaryCaptureImageStorage
    )
    native.PatientName = ds.PatientName
    ingest(native, ct_modality, tmp_path)
    sent[str(native.SOPInstanceUID)] = native
    received: dict[str, Dataset] = {}

    def on_store(event: evt.Event) -> int:
        got = event.dataset
        got.file_meta = event.file_meta
        received[str(got.SOPInstanceUID)] = got
        return 0x0000

    ae = AE(ae_title="ALL_WS")
    ae.add_supported_context(SecondaryCaptureImageStorage, ALL_TRANSFER_SYNTAXES)
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        entity(
            township, "ALL_WS", may_query=False, may_retrieve=False, is_move_destination=True,
            host="127.0.0.1", port=server.server_address[1],
        )  # fmt: skip
        result = dcmtk(
            "movescu", "-S", "-aet", "XUANWO_WS", "-aec", "CLOUDPACS", "-aem", "ALL_WS",
            "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={ds.StudyInstanceUID}",
            *map(str, receiver),
        )  # fmt: skip
    finally:
        server.shutdown()
    assert result.returncode == 0, result.stderr + result.stdout
    assert sorted(received) == sorted(sent)
    for uid, original in sent.items():
        got = received[uid]
        assert got.PixelData == original.PixelData
    syntaxes = {uid: str(d.file_meta.TransferSyntaxUID) for uid, d in received.items()}
    assert syntaxes[str(native.SOPInstanceUID)] in {ExplicitVRLittleEndian, ImplicitVRLittleEndian}
    assert set(syntaxes.values()) - {ExplicitVRLittleEndian, ImplicitVRLittleEndian} == {RLELossless, JPEGBaseline8Bit}


# --- Refusals ---------------------------------------------------------------------------


def test_a_find_move_or_get_naming_a_study_outside_the_scope_is_audited_once_per_request(
    receiver, archive, other_township, destination, storage_scp
):
    # Pingliang's workstation names Xuanwo's five-image study (wu): no match, no
    # sub-operation, and one access_refused entry under Xuanwo per request, not per image.
    entity(other_township, "PINGLIANG_WS")
    wu = archive.wu.study_uid
    series_uid = next(iter(archive.series))
    assert find(receiver, "PINGLIANG_WS", query("STUDY", StudyInstanceUID=wu)) == ([], 0x0000)
    assert find(receiver, "PINGLIANG_WS", query("IMAGE", SeriesInstanceUID=series_uid, SOPInstanceUID="")) == (
        [],
        0x0000,
    )
    statuses = move(receiver, "PINGLIANG_WS", query("STUDY", StudyInstanceUID=wu), "DEST_WS")
    assert (statuses[-1].Status, statuses[-1].NumberOfCompletedSuboperations) == (0x0000, 0)
    ae = scu("PINGLIANG_WS")
    role = build_role(CTImageStorage, scp_role=True)
    assoc = ae.associate(*receiver, ae_title="CLOUDPACS", ext_neg=[role])
    assert assoc.is_established
    try:
        got = [
            s
            for s, _ in assoc.send_c_get(query("STUDY", StudyInstanceUID=wu), StudyRootQueryRetrieveInformationModelGet)
        ]
    finally:
        assoc.release()
    assert got[-1].Status == 0x0000
    assert storage_scp.received == []
    refused = AuditEvent.objects.filter(action="cloudpacs.study.access_refused").order_by("pk")
    assert [event.detail for event in refused] == [
        {"via": via, "calling_ae": "PINGLIANG_WS"} for via in ("C-FIND", "C-FIND", "C-MOVE", "C-GET")
    ]
    assert {event.object_id for event in refused} == {wu}
    assert {event.facility_id for event in refused} == {archive.wu.facility_id}
    # A query that names no study (a wildcard, or none), or names one in scope, writes nothing.
    find(receiver, "PINGLIANG_WS", query("STUDY", StudyInstanceUID="", PatientID="XW*"))
    find(receiver, "PINGLIANG_WS", query("STUDY", StudyInstanceUID=archive.li.study_uid))
    assert refused.count() == 4
