"""The identity rules of the front door, over real sockets: an image never joins another
township's study or series, another study, or another patient's study. Each refusal is
answered with its own Failure status and Error Comment, to pynetdicom and to dcmtk's
storescu alike, stores nothing, and is listed for administrators with the association it
came in."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage

from cloudpacs import services
from cloudpacs.models import IngestConflict, Instance, Patient, Series, Study
from dicomnode.models import AssociationLog
from facilities.models import ExamKind, Facility, Modality, User
from tests.factories import PASSWORD, make_dataset, make_facility, make_modality, make_user
from tests.store_clients import CLIENTS, SENDERS, Answer, send_pynetdicom

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def jianchi(db) -> Facility:
    return make_facility("JIANCHI", name="涧池镇中心卫生院", short_name="涧池", pinyin="Jianchi")


@pytest.fixture
def jianchi_ct(jianchi: Facility) -> Modality:
    return make_modality(jianchi, ExamKind.CT, "JIANCHI_CT")


@pytest.fixture
def xuanwo_study(receiver, ct_modality, tmp_path) -> Dataset:
    """A study of XUANWO's, stored over the wire: the first instance of its series."""
    ds = make_dataset(patient_id="XW-0001", patient_name="Wang^Fang")
    assert send_pynetdicom(receiver, ct_modality.ae_title, ds, tmp_path).status == 0x0000
    return ds


def logged_association(uuid) -> AssociationLog:
    """The receiver writes the row just after it answers the release."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        row = AssociationLog.objects.filter(uuid=uuid).first()
        if row is not None:
            return row
        time.sleep(0.1)
    raise AssertionError(f"no association log row {uuid}")


def assert_refused(
    answer: Answer,
    error: type[services.IdentityConflict],
    ds: Dataset,
    *,
    secrets: tuple[str, ...] = (),
) -> IngestConflict:
    """The answer is the reason's status and comment, names nothing of the archive's,
    nothing was stored, and the refusal is recorded with its association."""
    assert (answer.status, answer.comment) == (error.status, error.comment)
    for secret in ("XUANWO", "漩涡", "XW-0001", "Wang", *secrets):
        assert secret not in answer.comment
    assert not Instance.objects.filter(sop_instance_uid=ds.SOPInstanceUID).exists()
    conflict = IngestConflict.objects.get(sop_instance_uid=ds.SOPInstanceUID)
    assert conflict.reason == error.reason
    assert conflict.channel == IngestConflict.Channel.DIMSE
    assert conflict.study_uid == ds.StudyInstanceUID
    row = logged_association(conflict.association)
    assert (row.instances_conflict, row.instances_stored, row.instances_failed) == (1, 0, 0)
    return conflict


def stored_files() -> set[Path]:
    return set(Path(settings.STORAGE_ROOT).rglob("*.dcm"))


@pytest.mark.parametrize("client", CLIENTS)
def test_another_township_cannot_add_to_a_study_by_its_uid(
    receiver, ct_modality, jianchi_ct, xuanwo_study, tmp_path, client
):
    files = stored_files()
    intruder = make_dataset(study_uid=xuanwo_study.StudyInstanceUID, patient_id="JC-0099")
    answer = SENDERS[client](receiver, jianchi_ct.ae_title, intruder, tmp_path)
    conflict = assert_refused(answer, services.StudyOfAnotherFacility, intruder)
    assert conflict.facility == jianchi_ct.facility
    assert conflict.modality == jianchi_ct
    assert conflict.patient_id == "JC-0099"
    study = Study.objects.get(study_uid=xuanwo_study.StudyInstanceUID)
    assert services.study_instances(study) == 1
    assert study.number_of_series == 1
    assert stored_files() == files


@pytest.mark.parametrize("client", CLIENTS)
def test_another_township_cannot_add_to_a_series_by_its_uid_under_a_new_study(
    receiver, ct_modality, jianchi_ct, xuanwo_study, tmp_path, client
):
    intruder = make_dataset(series_uid=xuanwo_study.SeriesInstanceUID, patient_id="JC-0099")
    answer = SENDERS[client](receiver, jianchi_ct.ae_title, intruder, tmp_path)
    assert_refused(answer, services.SeriesOfAnotherFacility, intruder, secrets=(xuanwo_study.StudyInstanceUID,))
    # Nothing of the new study was kept either: the refusal rolled it all back.
    assert not Study.objects.filter(study_uid=intruder.StudyInstanceUID).exists()
    assert not Patient.objects.filter(patient_id="JC-0099").exists()
    assert services.series_instances(Series.objects.get(series_uid=xuanwo_study.SeriesInstanceUID)) == 1


@pytest.mark.parametrize("client", CLIENTS)
def test_a_series_cannot_move_to_another_study_of_the_same_township(
    receiver, ct_modality, xuanwo_study, tmp_path, client
):
    stray = make_dataset(series_uid=xuanwo_study.SeriesInstanceUID, patient_id="XW-0001")
    answer = SENDERS[client](receiver, ct_modality.ae_title, stray, tmp_path)
    assert_refused(answer, services.SeriesOfAnotherStudy, stray)
    assert not Study.objects.filter(study_uid=stray.StudyInstanceUID).exists()


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("same_series", [False, True], ids=["new-series", "same-series"])
def test_another_patient_id_cannot_join_a_study(receiver, ct_modality, xuanwo_study, tmp_path, client, same_series):
    other = make_dataset(
        study_uid=xuanwo_study.StudyInstanceUID,
        series_uid=xuanwo_study.SeriesInstanceUID if same_series else None,
        patient_id="XW-0002",
        instance_number=2,
    )
    answer = SENDERS[client](receiver, ct_modality.ae_title, other, tmp_path)
    assert_refused(answer, services.PatientMismatch, other, secrets=("XW-0002",))
    assert services.study_instances(Study.objects.get(study_uid=xuanwo_study.StudyInstanceUID)) == 1


@pytest.mark.parametrize("client", CLIENTS)
def test_another_issuer_of_the_same_patient_id_cannot_join_a_study(receiver, ct_modality, tmp_path, client):
    first = make_dataset(patient_id="XW-0001", IssuerOfPatientID="XUANWO_HIS")
    assert send_pynetdicom(receiver, ct_modality.ae_title, first, tmp_path).status == 0x0000
    other = make_dataset(
        study_uid=first.StudyInstanceUID, patient_id="XW-0001", IssuerOfPatientID="COUNTY_HIS", instance_number=2
    )
    answer = SENDERS[client](receiver, ct_modality.ae_title, other, tmp_path)
    assert_refused(answer, services.PatientMismatch, other)
    # Without an issuer the instance is of the study's patient.
    same = make_dataset(study_uid=first.StudyInstanceUID, patient_id="XW-0001", instance_number=3)
    assert send_pynetdicom(receiver, ct_modality.ae_title, same, tmp_path).status == 0x0000


@pytest.mark.parametrize("client", CLIENTS)
def test_another_township_cannot_re_send_a_stored_instance_under_a_study_of_its_own(
    receiver, ct_modality, jianchi_ct, xuanwo_study, tmp_path, client
):
    copy = make_dataset(sop_instance_uid=xuanwo_study.SOPInstanceUID, patient_id="JC-0099")
    answer = SENDERS[client](receiver, jianchi_ct.ae_title, copy, tmp_path)
    assert (answer.status, answer.comment) == (services.InstanceElsewhere.status, services.InstanceElsewhere.comment)
    # The stored instance is untouched, and nothing of the copy's study was kept.
    instance = Instance.objects.get(sop_instance_uid=xuanwo_study.SOPInstanceUID)
    assert instance.series.study.study_uid == xuanwo_study.StudyInstanceUID
    assert not Study.objects.filter(study_uid=copy.StudyInstanceUID).exists()
    conflict = IngestConflict.objects.get(study_uid=copy.StudyInstanceUID)
    assert conflict.reason == IngestConflict.Reason.INSTANCE_ELSEWHERE
    assert logged_association(conflict.association).instances_conflict == 1


def test_a_refusal_leaves_the_association_open_for_the_next_instance(
    receiver, ct_modality, jianchi_ct, xuanwo_study, tmp_path
):
    ae = AE(ae_title=jianchi_ct.ae_title)
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    assoc = ae.associate(*receiver, ae_title="CLOUDPACS")
    intruder = make_dataset(study_uid=xuanwo_study.StudyInstanceUID, patient_id="JC-0099")
    own = make_dataset(patient_id="JC-0001")
    statuses = [assoc.send_c_store(ds).Status for ds in (intruder, own)]
    assoc.release()
    assert statuses == [services.StudyOfAnotherFacility.status, 0x0000]
    assert Study.objects.get(study_uid=own.StudyInstanceUID).facility == jianchi_ct.facility
    conflict = IngestConflict.objects.get()
    row = logged_association(conflict.association)
    assert (row.instances_stored, row.instances_conflict) == (1, 1)


def test_administrators_see_the_conflicts_linked_to_the_association_and_cannot_edit_them(
    receiver, ct_modality, jianchi_ct, xuanwo_study, tmp_path, county
):
    make_user(User.Role.ADMINISTRATOR, county, username="admin_staff", is_staff=True)
    administrator_client = Client()
    assert administrator_client.login(username="admin_staff", password=PASSWORD)
    intruder = make_dataset(study_uid=xuanwo_study.StudyInstanceUID, patient_id="JC-0099")
    send_pynetdicom(receiver, jianchi_ct.ae_title, intruder, tmp_path)
    conflict = IngestConflict.objects.get()
    row = logged_association(conflict.association)

    listing = administrator_client.get(reverse("admin:cloudpacs_ingestconflict_changelist")).content.decode()
    assert "JIANCHI_CT" in listing
    assert f"?uuid={row.uuid}" in listing
    log_page = administrator_client.get(
        reverse("admin:dicomnode_associationlog_changelist") + f"?uuid={row.uuid}"
    ).content.decode()
    assert f"?association={row.uuid}" in log_page
    filtered = administrator_client.get(
        reverse("admin:cloudpacs_ingestconflict_changelist") + f"?association={row.uuid}"
    ).content.decode()
    assert intruder.StudyInstanceUID in filtered
    change = reverse("admin:cloudpacs_ingestconflict_change", args=[conflict.pk])
    assert administrator_client.get(change).status_code == 200
    assert administrator_client.post(change, {"reason": "patient"}).status_code == 403
    assert administrator_client.get(reverse("admin:cloudpacs_ingestconflict_add")).status_code == 403
    delete = reverse("admin:cloudpacs_ingestconflict_delete", args=[conflict.pk])
    assert administrator_client.post(delete, {"post": "yes"}).status_code == 403
    assert IngestConflict.objects.get().reason == IngestConflict.Reason.STUDY_OF_ANOTHER_FACILITY


def test_every_reason_has_its_own_status_and_a_comment_that_fits_an_lo():
    statuses = [error.status for error in services.IDENTITY_CONFLICTS]
    assert len(set(statuses)) == len(statuses)
    assert all(0xC000 <= status <= 0xCFFF for status in statuses)
    assert all(len(error.comment) <= 64 for error in services.IDENTITY_CONFLICTS)
    assert {error.reason for error in services.IDENTITY_CONFLICTS} == set(IngestConflict.Reason.values)


def test_an_ordinary_series_passes_the_rules(receiver, ct_modality, tmp_path):
    """The rules do not get in the way of an ordinary series: the fast path checks them."""
    study_uid, series_uid = generate_uid(), generate_uid()
    datasets = [
        make_dataset(study_uid=study_uid, series_uid=series_uid, patient_id="XW-0100", instance_number=n)
        for n in range(1, 6)
    ]
    assert [send_pynetdicom(receiver, ct_modality.ae_title, ds, tmp_path).status for ds in datasets] == [0] * 5
    assert services.study_instances(Study.objects.get(study_uid=study_uid)) == 5
    assert not IngestConflict.objects.exists()
