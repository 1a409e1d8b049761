"""STOW-RS over HTTP with the dicomweb-client package: a stored instance goes through the
ingest service into the technologist's facility and is found by QIDO-RS; failures come
back per instance with the PS3.18 statuses."""

from __future__ import annotations

import copy
from datetime import date
from io import BytesIO

import pytest
import requests
from django.core.handlers.wsgi import LimitedStream
from django.test import RequestFactory
from pydicom import dcmwrite
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE

from cloudpacs import services
from cloudpacs.dicomweb import views
from cloudpacs.dicomweb.multipart import OutPart, encode, new_boundary
from cloudpacs.models import IngestConflict, Instance, InstanceVersion, Study
from cloudpacs.storage import PREAMBLE, file_meta_bytes
from consults import workflow
from consults.models import Consult
from facilities.models import AuditEvent
from tests.dicomweb_support import client_for, token_for, voi_lut_dx
from tests.factories import make_dataset
from tests.store_clients import send_file_as_is

pytestmark = pytest.mark.django_db(transaction=True)


def part10(ds) -> bytes:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def post(live_server, user, body: bytes, content_type: str, path: str = "/dicomweb/studies") -> requests.Response:
    return requests.post(
        live_server.url + path,
        data=body,
        headers={"Authorization": f"Token {token_for(user)}", "Content-Type": content_type},
        timeout=20,
    )


def multipart_body(*payloads: bytes) -> tuple[bytes, str]:
    boundary = new_boundary()
    body = encode([OutPart("application/dicom", data=payload) for payload in payloads], boundary)
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


def test_a_technologist_stores_a_new_instance_and_finds_it(live_server, technologist, archive):
    client = client_for(live_server, technologist)
    ds = make_dataset(
        patient_id="P0100", patient_name="Zhao^Liu=赵^六", character_set="ISO_IR 192", study_date=date(2025, 11, 3)
    )
    result = client.store_instances([ds])
    (referenced,) = result.ReferencedSOPSequence
    assert referenced.ReferencedSOPInstanceUID == ds.SOPInstanceUID
    assert referenced.RetrieveURL.endswith(f"/instances/{ds.SOPInstanceUID}")
    assert "FailedSOPSequence" not in result or len(result.FailedSOPSequence) == 0
    study = Study.objects.get(study_uid=ds.StudyInstanceUID)
    assert study.facility == technologist.facility
    assert study.modality == archive.ct
    (found,) = client.search_for_studies(search_filters={"PatientName": "赵*"})
    assert found["0020000D"]["Value"] == [ds.StudyInstanceUID]
    assert client.retrieve_instance(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID).PatientID == "P0100"
    assert AuditEvent.objects.filter(action="cloudpacs.study.stored_over_web", object_id=ds.StudyInstanceUID).exists()


def test_a_dx_goes_to_the_facilitys_dr_machine(live_server, technologist, archive):
    client = client_for(live_server, technologist)
    ds = voi_lut_dx(patient_id="P0101")
    client.store_instances([ds])
    assert Study.objects.get(study_uid=ds.StudyInstanceUID).modality == archive.dr


def test_storing_into_a_named_study_refuses_instances_of_another(live_server, technologist, archive):
    study_uid = archive.studies["zhang_ct"][0]
    belongs = make_dataset(study_uid=study_uid, patient_id="P0001", instance_number=9)
    stranger = make_dataset(patient_id="P0102")
    body, content_type = multipart_body(part10(belongs), part10(stranger))
    response = post(live_server, technologist, body, content_type, f"/dicomweb/studies/{study_uid}")
    assert response.status_code == 202
    result = response.json()
    assert [item["00081155"]["Value"][0] for item in result["00081199"]["Value"]] == [belongs.SOPInstanceUID]
    (failed,) = result["00081198"]["Value"]
    assert failed["00081155"]["Value"] == [stranger.SOPInstanceUID]
    assert failed["00081197"]["Value"] == [0xA900]
    assert not Instance.objects.filter(sop_instance_uid=stranger.SOPInstanceUID).exists()


def test_when_every_instance_fails_the_answer_is_409(live_server, technologist, archive):
    body, content_type = multipart_body(b"not a dicom file at all", b"\x00" * 200)
    response = post(live_server, technologist, body, content_type)
    assert response.status_code == 409
    reasons = [item["00081197"]["Value"][0] for item in response.json()["00081198"]["Value"]]
    assert reasons == [0xC000, 0xC000]


def test_a_study_uid_of_another_township_is_refused(live_server, technologist, archive):
    other_study = archive.studies["other_zhang"][0]
    ds = make_dataset(study_uid=other_study, patient_id="P0001")
    body, content_type = multipart_body(part10(ds))
    response = post(live_server, technologist, body, content_type)
    assert response.status_code == 409
    assert response.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0xC010]
    assert response.headers["Warning"] == '299 yunying "StudyInstanceUID is in use by another facility"'
    assert other_study not in response.text


def test_the_same_instance_sent_twice_is_stored_once(live_server, technologist, archive):
    ds = make_dataset(patient_id="P0103")
    body, content_type = multipart_body(part10(ds))
    assert post(live_server, technologist, body, content_type).status_code == 200
    assert post(live_server, technologist, body, content_type).status_code == 200
    assert Instance.objects.filter(sop_instance_uid=ds.SOPInstanceUID).count() == 1


def test_a_dataset_whose_class_differs_from_its_file_meta_is_refused(live_server, technologist, archive):
    ds = make_dataset(patient_id="P0104")
    meta = file_meta_bytes("1.2.840.10008.5.1.4.1.1.7", ds.SOPInstanceUID, ExplicitVRLittleEndian)
    del ds.file_meta
    dataset = BytesIO()
    dcmwrite(dataset, ds, implicit_vr=False, little_endian=True)
    body, content_type = multipart_body(PREAMBLE + meta + dataset.getvalue())
    response = post(live_server, technologist, body, content_type)
    assert response.status_code == 409
    assert response.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0xA900]


def bare(ds, *, little_endian: bool = True) -> bytes:
    """The dataset alone, explicit VR in the byte order asked for."""
    ds = copy.deepcopy(ds)
    del ds.file_meta
    buffer = BytesIO()
    dcmwrite(buffer, ds, implicit_vr=False, little_endian=little_endian)
    return buffer.getvalue()


def c_store(receiver, calling: str, part10_file: bytes, sop_class: str, syntax: str, tmp_path) -> Dataset:
    """The C-STORE of a Part 10 file's dataset bytes as they are, by pynetdicom, which
    takes the request's SOP Class and Instance UIDs and the context from the file's meta."""
    path = tmp_path / f"{generate_uid()}.dcm"
    path.write_bytes(part10_file)
    ae = AE(ae_title=calling)
    ae.add_requested_context(sop_class, [syntax])
    assoc = ae.associate(*receiver, ae_title="CLOUDPACS")
    assert assoc.is_established
    try:
        return send_file_as_is(assoc, path)
    finally:
        assoc.release()


def test_a_dataset_announced_as_another_instance_is_refused_alike_over_dicom_and_the_web(
    live_server, receiver, technologist, archive, tmp_path
):
    # PS3.10 7.1: a file's Media Storage SOP Instance UID is its dataset's, as a C-STORE
    # request's Affected SOP Instance UID is (PS3.7 9.1.1.1). The receiver refused a
    # dataset announced as another instance with 0xC001 and why; STOW-RS with 0xC000 and
    # not a word of why. (storescu takes the request's UID from the dataset, never from
    # the meta, so the file it sends is stored: the receiver never sees that meta.)
    ds = make_dataset(patient_id="P0110")
    announced = generate_uid()
    payload = PREAMBLE + file_meta_bytes(ds.SOPClassUID, announced, ExplicitVRLittleEndian) + bare(ds)
    response = post(live_server, technologist, *multipart_body(payload))
    assert response.status_code == 409
    (failed,) = response.json()["00081198"]["Value"]
    assert failed["00081155"]["Value"] == [announced]
    assert failed["00081197"]["Value"] == [0xC001]
    why = f"SOPInstanceUID is not the file meta's: dataset {ds.SOPInstanceUID}, {announced}"
    assert response.headers["Warning"] == f'299 yunying "{why}"'
    answer = c_store(receiver, archive.ct.ae_title, payload, ds.SOPClassUID, ExplicitVRLittleEndian, tmp_path)
    assert answer.Status == 0xC001
    assert answer.ErrorComment.startswith("SOPInstanceUID is not the request's: dataset ")
    assert not Instance.objects.filter(sop_instance_uid__in=[ds.SOPInstanceUID, announced]).exists()


@pytest.mark.parametrize(
    ("syntax", "little_endian", "words"),
    [
        (ExplicitVRLittleEndian, False, "encoded big endian, not little endian"),
        (ExplicitVRBigEndian, True, "encoded little endian, not big endian"),
    ],
)
def test_a_dataset_in_the_other_byte_order_is_not_understood_alike_over_dicom_and_the_web(
    live_server, receiver, technologist, archive, tmp_path, syntax, little_endian, words
):
    # PS3.4 B.2.3: a dataset not encoded as its transfer syntax says cannot be understood
    # (0xC000), as implicit VR data in an explicit VR context is. Read in the wrong byte
    # order its tags came out as garbage, and the receiver answered 0xC001 "SOPClassUID is
    # missing"; STOW-RS 0xC000 with no reason.
    ds = make_dataset(patient_id="P0111")
    payload = (
        PREAMBLE + file_meta_bytes(ds.SOPClassUID, ds.SOPInstanceUID, syntax) + bare(ds, little_endian=little_endian)
    )
    response = post(live_server, technologist, *multipart_body(payload))
    assert response.status_code == 409
    assert response.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0xC000]
    assert f"the dataset is {words} as" in response.headers["Warning"]
    answer = c_store(receiver, archive.ct.ae_title, payload, ds.SOPClassUID, syntax, tmp_path)
    assert answer.Status == 0xC000
    assert answer.ErrorComment.startswith(f"the dataset is {words}")
    assert not Instance.objects.filter(sop_instance_uid=ds.SOPInstanceUID).exists()


def test_a_class_or_transfer_syntax_the_receiver_refuses_is_refused_over_the_web_too(
    live_server, technologist, archive
):
    # C-STORE refuses a private class and JPIP referenced pixel data at negotiation; STOW
    # stored both (PS3.18 Table I.2-2: 0x0122 SOP class, 0xC122 transfer syntax).
    private = make_dataset(patient_id="P0105", sop_class_uid="1.2.826.0.1.3680043.9.7433.1.1")
    jpip = make_dataset(patient_id="P0106")
    jpip.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.94"  # JPIP Referenced, explicit VR LE
    del jpip.PixelData  # the pixels live on a JPIP server
    jpip.PixelDataProviderURL = "jpip://jpip.example/P0106"
    stored = make_dataset(patient_id="P0107")
    body, content_type = multipart_body(part10(private), part10(jpip), part10(stored))
    response = post(live_server, technologist, body, content_type)
    assert response.status_code == 202
    reasons = {
        item["00081155"]["Value"][0]: item["00081197"]["Value"][0] for item in response.json()["00081198"]["Value"]
    }
    assert reasons == {private.SOPInstanceUID: 0x0122, jpip.SOPInstanceUID: 0xC122}
    assert list(Instance.objects.filter(sop_instance_uid__in=[*reasons, stored.SOPInstanceUID]).values_list(
        "sop_instance_uid", flat=True
    )) == [stored.SOPInstanceUID]  # fmt: skip


def test_other_media_types_are_415_and_a_body_without_parts_is_400(live_server, technologist, archive):
    assert post(live_server, technologist, b"{}", "application/dicom+json").status_code == 415
    boundary = new_boundary()
    xml = f'multipart/related; type="application/dicom+xml"; boundary={boundary}'
    assert post(live_server, technologist, b"", xml).status_code == 415
    empty = f"--{boundary}--\r\n".encode()
    response = post(
        live_server, technologist, empty, f'multipart/related; type="application/dicom"; boundary={boundary}'
    )
    assert response.status_code == 400


def test_a_boundary_that_is_not_printable_ascii_is_400_not_a_server_error(live_server, technologist, archive):
    # A non-ASCII boundary could not be looked for in the body: 500.
    for boundary in ("bé", "x" * 201, "ends in a space "):
        content_type = f'multipart/related; type="application/dicom"; boundary="{boundary}"'
        body = f"--{boundary}\r\n\r\nxx\r\n--{boundary}--\r\n".encode("latin-1")
        response = post(live_server, technologist, body, content_type)
        assert response.status_code == 400, boundary
        assert "RFC 2046" in response.text


def test_a_radiologist_may_not_store(live_server, radiologist, archive):
    body, content_type = multipart_body(part10(make_dataset(sop_instance_uid=generate_uid())))
    assert post(live_server, radiologist, body, content_type).status_code == 403


def test_a_session_upload_needs_the_csrf_token(live_server, technologist, archive):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(technologist)
    ds = make_dataset(patient_id="P0105")
    body, content_type = multipart_body(part10(ds))
    assert client.post("/dicomweb/studies", body, content_type=content_type).status_code == 403
    token = "k" * 32
    client.cookies["csrftoken"] = token
    response = client.post("/dicomweb/studies", body, content_type=content_type, HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 200


def test_another_townships_series_uid_under_a_new_study_is_refused_without_naming_its_study(
    live_server, outsider, archive
):
    """The series path: a new Study UID carrying XUANWO's Series UID, stored by PINGLIANG."""
    study_uid, series_uid, _ = archive.uids("zhang_ct")
    ds = make_dataset(series_uid=series_uid, patient_id="P9999")
    body, content_type = multipart_body(part10(ds))
    response = post(live_server, outsider, body, content_type)
    assert response.status_code == 409
    (failed,) = response.json()["00081198"]["Value"]
    assert failed["00081197"]["Value"] == [0xC011]
    assert response.headers["Warning"] == '299 yunying "SeriesInstanceUID is in use by another facility"'
    assert study_uid not in response.text
    assert "00081190" not in response.json()
    assert not Instance.objects.filter(sop_instance_uid=ds.SOPInstanceUID).exists()
    assert not Study.objects.filter(study_uid=ds.StudyInstanceUID).exists()
    conflict = IngestConflict.objects.get()
    assert (conflict.reason, conflict.channel, conflict.user) == (
        IngestConflict.Reason.SERIES_OF_ANOTHER_FACILITY,
        IngestConflict.Channel.STOW,
        outsider,
    )
    assert conflict.association is None


def test_another_patient_id_in_a_study_is_refused_over_the_web(live_server, technologist, archive):
    study_uid, series_uid, _ = archive.uids("zhang_ct")
    ds = make_dataset(study_uid=study_uid, series_uid=series_uid, patient_id="P0002", instance_number=7)
    body, content_type = multipart_body(part10(ds))
    response = post(live_server, technologist, body, content_type)
    assert response.status_code == 409
    assert response.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0xC013]
    assert "PatientID or IssuerOfPatientID differs" in response.headers["Warning"]
    assert services.study_instances(Study.objects.get(study_uid=study_uid)) == 3


def test_a_correction_after_signing_is_kept_pending_over_the_web(live_server, technologist, radiologist, archive):
    study_uid, series_uid, sop_uid = archive.uids("zhang_ct")
    consult = Consult.objects.get(study__study_uid=study_uid)
    workflow.claim_consult(consult, radiologist)
    workflow.sign_final(consult, radiologist, "所见", "意见")
    fix = make_dataset(
        study_uid=study_uid,
        series_uid=series_uid,
        sop_instance_uid=sop_uid,
        patient_id="P0001",
        patient_name="Zhang^San=张^三",
        character_set="ISO_IR 192",
    )
    body, content_type = multipart_body(part10(fix))
    response = post(live_server, technologist, body, content_type)
    assert response.status_code == 200
    assert "kept pending" in response.headers["Warning"]
    instance = Instance.objects.get(sop_instance_uid=sop_uid)
    assert instance.versions.get().state == InstanceVersion.State.PENDING
    assert Study.objects.get(study_uid=study_uid).pending_corrections == 1


def chunked_request(user, body: bytes, content_type: str, *, terminated: bool):
    """A STOW-RS request as a WSGI server hands over a chunked body: no Content-Length, the
    Transfer-Encoding header, and the decoded body as its input, which gunicorn marks as
    ending where the body ends (wsgi.input_terminated)."""
    request = RequestFactory().post(
        "/dicomweb/studies",
        data=body,
        content_type=content_type,
        HTTP_AUTHORIZATION=f"Token {token_for(user)}",
        HTTP_TRANSFER_ENCODING="chunked",
    )
    del request.META["CONTENT_LENGTH"]
    request.META["wsgi.input"] = BytesIO(body)
    request.META["wsgi.input_terminated"] = terminated
    request._stream = LimitedStream(request.META["wsgi.input"], 0)  # what Django makes of it
    return request


def test_a_chunked_upload_is_read_whole_behind_a_server_that_decodes_it(technologist, archive):
    # Orthanc's STOW-RS client sends chunked bodies by default; Django reads Content-Length
    # bytes, none, and the store was 400 "no boundary found".
    ds = make_dataset(patient_id="P0001", patient_name="Zhang^San")
    body, content_type = multipart_body(part10(ds))
    response = views.studies(chunked_request(technologist, body, content_type, terminated=True))
    assert response.status_code == 200, response.content
    assert Instance.objects.filter(sop_instance_uid=ds.SOPInstanceUID).exists()
    refused = views.studies(chunked_request(technologist, body, content_type, terminated=False))
    assert refused.status_code == 411
