"""Corrections over real sockets (DICOM_OVERWRITE_POLICY): the same SOP Instance UID with
other content is never dropped unseen. From the console that sent the study it replaces
the image while the report is unsigned (the old file kept as a prior version, audited, and
the reading page says so); once signed it waits beside the report as a pending correction,
shown to the reader and to the township; from another console, or with the policy
`never`, it is refused with its own status and listed."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.test import Client
from django.urls import reverse
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import DigitalXRayImageStorageForPresentation

from cloudpacs import services, storage
from cloudpacs.models import IngestConflict, Instance, InstanceMetadata, InstanceVersion, Study
from consults import workflow
from consults.models import Consult
from consults.services import open_consult_for_study
from facilities.auditlabels import action_label
from facilities.models import AuditEvent, User
from tests.factories import make_dataset
from tests.store_clients import CLIENTS, SENDERS, send_pynetdicom

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def original(receiver, ct_modality, tmp_path) -> Dataset:
    ds = make_dataset(patient_id="XW-0001")
    assert send_pynetdicom(receiver, ct_modality.ae_title, ds, tmp_path).status == 0x0000
    return ds


def corrected(ds: Dataset) -> Dataset:
    """The same instance with other pixel data, as a console re-sends it after a fix."""
    copy = make_dataset(
        sop_instance_uid=ds.SOPInstanceUID,
        study_uid=ds.StudyInstanceUID,
        series_uid=ds.SeriesInstanceUID,
        patient_id=ds.PatientID,
    )
    copy.AccessionNumber = ds.AccessionNumber
    copy.PixelData = bytes(len(ds.PixelData))
    return copy


def consult_for(ds: Dataset) -> Consult:
    study = Study.objects.get(study_uid=ds.StudyInstanceUID)
    Study.objects.filter(pk=study.pk).update(status=Study.Status.ARRIVED)
    return open_consult_for_study(Study.objects.get(pk=study.pk))


def sign(consult: Consult, radiologist: User) -> None:
    workflow.claim_consult(consult, radiologist)
    workflow.sign_final(consult, radiologist, "双肺纹理清晰。", "胸部 CT 未见异常。")


def stored_pixels(key: str) -> bytes:
    return dcmread(storage.path_for(key)).PixelData


@pytest.mark.parametrize("client", CLIENTS)
def test_before_signing_a_correction_from_the_same_console_replaces_the_image(
    receiver, ct_modality, original, tmp_path, radiologist, client
):
    consult = consult_for(original)
    instance = Instance.objects.get(sop_instance_uid=original.SOPInstanceUID)
    InstanceMetadata.objects.create(instance=instance, document="{}")
    fix = corrected(original)

    answer = SENDERS[client](receiver, ct_modality.ae_title, fix, tmp_path)

    assert answer.status == 0x0000
    replaced = Instance.objects.get(sop_instance_uid=original.SOPInstanceUID)
    assert replaced.pk == instance.pk
    assert replaced.storage_key != instance.storage_key
    assert stored_pixels(replaced.storage_key) == fix.PixelData
    # The old file stays, as the prior version.
    (prior,) = InstanceVersion.objects.filter(instance=replaced)
    assert prior.state == InstanceVersion.State.PRIOR
    assert (prior.storage_key, prior.sha256) == (instance.storage_key, instance.sha256)
    assert stored_pixels(prior.storage_key) == original.PixelData
    # The stale WADO-RS metadata is gone, to be computed again from the new file.
    assert not InstanceMetadata.objects.filter(instance=replaced).exists()
    study = Study.objects.get(study_uid=original.StudyInstanceUID)
    assert study.images_changed_at is not None
    assert study.status == Study.Status.UPDATED
    assert services.study_instances(study) == 1
    event = AuditEvent.objects.get(action="cloudpacs.instance.replaced")
    assert event.object_id == original.StudyInstanceUID
    assert event.detail["stored_sha256"] == instance.sha256
    assert event.facility == ct_modality.facility
    assert action_label(event.action) == "更正影像替换原图"

    client_ = Client()
    client_.force_login(radiologist)
    page = client_.get(reverse("reading:page", args=[consult.uuid])).content.decode()
    assert 'data-flag="images-changed"' in page
    assert "影像已更正" in page


def test_a_correction_in_another_sop_class_is_indexed_in_its_class(receiver, ct_modality, original, tmp_path):
    # A console re-sending an instance as another object (a multi-frame for a single frame,
    # another class of image): retrieve proposes the indexed class, so the index must follow the
    # file, or every C-MOVE and C-GET of it fails for want of a context.
    fix = make_dataset(
        sop_class_uid=DigitalXRayImageStorageForPresentation,
        sop_instance_uid=original.SOPInstanceUID,
        study_uid=original.StudyInstanceUID,
        series_uid=original.SeriesInstanceUID,
        patient_id=original.PatientID,
    )
    fix.AccessionNumber = original.AccessionNumber

    assert send_pynetdicom(receiver, ct_modality.ae_title, fix, tmp_path).status == 0x0000

    replaced = Instance.objects.get(sop_instance_uid=original.SOPInstanceUID)
    assert replaced.sop_class_uid == DigitalXRayImageStorageForPresentation
    assert dcmread(storage.path_for(replaced.storage_key)).SOPClassUID == DigitalXRayImageStorageForPresentation


@pytest.mark.parametrize("client", CLIENTS)
def test_after_signing_a_correction_is_kept_pending_for_the_reader_and_the_township(
    receiver, ct_modality, original, tmp_path, radiologist, technologist, client
):
    consult = consult_for(original)
    sign(consult, radiologist)
    study = Study.objects.get(study_uid=original.StudyInstanceUID)
    assert study.report_signed_at is not None
    instance = Instance.objects.get(sop_instance_uid=original.SOPInstanceUID)
    fix = corrected(original)

    assert SENDERS[client](receiver, ct_modality.ae_title, fix, tmp_path).status == 0x0000
    # Sent twice, it is one pending correction.
    assert SENDERS[client](receiver, ct_modality.ae_title, fix, tmp_path).status == 0x0000

    # The images the report was read from are unchanged ...
    unchanged = Instance.objects.get(sop_instance_uid=original.SOPInstanceUID)
    assert (unchanged.storage_key, unchanged.sha256) == (instance.storage_key, instance.sha256)
    assert stored_pixels(unchanged.storage_key) == original.PixelData
    # ... and the correction is kept beside them.
    (pending,) = InstanceVersion.objects.filter(instance=unchanged)
    assert pending.state == InstanceVersion.State.PENDING
    assert pending.source_ae == ct_modality.ae_title
    assert stored_pixels(pending.storage_key) == fix.PixelData
    study.refresh_from_db()
    assert study.pending_corrections == 1
    assert study.images_changed_at is None
    assert AuditEvent.objects.filter(action="cloudpacs.instance.correction_pending").count() == 1

    reader = Client()
    reader.force_login(radiologist)
    page = reader.get(reverse("reading:page", args=[consult.uuid])).content.decode()
    assert 'data-flag="pending-correction"' in page
    township = Client()
    township.force_login(technologist)
    page = township.get(reverse("consults:facility", args=[ct_modality.facility.uuid])).content.decode()
    assert 'data-flag="pending-correction"' in page
    assert "待处理更正影像 1 幅" in page


@pytest.mark.parametrize("client", CLIENTS)
def test_a_correction_from_another_console_is_refused_and_listed(
    receiver, ct_modality, dr_modality, original, tmp_path, client
):
    instance = Instance.objects.get(sop_instance_uid=original.SOPInstanceUID)
    files = set(Path(storage.root()).rglob("*.dcm"))
    fix = corrected(original)

    answer = SENDERS[client](receiver, dr_modality.ae_title, fix, tmp_path)

    assert (answer.status, answer.comment) == (services.CorrectionRefused.status, services.CorrectionRefused.comment)
    assert Instance.objects.get(pk=instance.pk).sha256 == instance.sha256
    assert not InstanceVersion.objects.exists()
    assert set(Path(storage.root()).rglob("*.dcm")) == files
    conflict = IngestConflict.objects.get()
    assert conflict.reason == IngestConflict.Reason.CORRECTION_REFUSED
    assert conflict.modality == dr_modality


@pytest.mark.parametrize("client", CLIENTS)
def test_with_the_policy_never_every_correction_is_refused(receiver, ct_modality, original, tmp_path, settings, client):
    settings.DICOM_OVERWRITE_POLICY = "never"
    answer = SENDERS[client](receiver, ct_modality.ae_title, corrected(original), tmp_path)
    assert (answer.status, answer.comment) == (services.CorrectionRefused.status, services.CorrectionRefused.comment)
    assert stored_pixels(Instance.objects.get().storage_key) == original.PixelData
    assert IngestConflict.objects.get().reason == IngestConflict.Reason.CORRECTION_REFUSED
    # An identical re-send is still a success.
    assert send_pynetdicom(receiver, ct_modality.ae_title, original, tmp_path).status == 0x0000


def test_with_the_policy_any_source_another_console_of_the_township_may_correct(
    receiver, ct_modality, dr_modality, original, tmp_path, settings
):
    settings.DICOM_OVERWRITE_POLICY = "any_source"
    fix = corrected(original)
    assert send_pynetdicom(receiver, dr_modality.ae_title, fix, tmp_path).status == 0x0000
    assert stored_pixels(Instance.objects.get().storage_key) == fix.PixelData
    assert InstanceVersion.objects.get().state == InstanceVersion.State.PRIOR


def test_a_correction_that_restores_the_first_content_replaces_again(receiver, ct_modality, original, tmp_path):
    fix = corrected(original)
    assert send_pynetdicom(receiver, ct_modality.ae_title, fix, tmp_path).status == 0x0000
    assert send_pynetdicom(receiver, ct_modality.ae_title, original, tmp_path).status == 0x0000
    instance = Instance.objects.get()
    assert stored_pixels(instance.storage_key) == original.PixelData
    assert InstanceVersion.objects.filter(state=InstanceVersion.State.PRIOR).count() == 2
    for version in InstanceVersion.objects.all():
        assert storage.path_for(version.storage_key).is_file()
