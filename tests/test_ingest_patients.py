"""Patients at the front door, over real sockets: an empty Patient ID merges nobody (each
study gets a patient of its own, flagged for the technologist), and a different name under
a known Patient ID is kept on the study as received and shown as a conflict, never written
over the patient."""

from __future__ import annotations

from datetime import date

import pytest
from django.test import Client
from django.urls import reverse
from pydicom.uid import generate_uid

from cloudpacs import services
from cloudpacs.models import Patient, Study
from consults.services import open_consult_for_study
from tests.factories import make_dataset
from tests.store_clients import CLIENTS, SENDERS, send_pynetdicom

pytestmark = pytest.mark.django_db(transaction=True)


def township_page(technologist, facility) -> str:
    client = Client()
    client.force_login(technologist)
    return client.get(reverse("consults:facility", args=[facility.uuid])).content.decode()


@pytest.mark.parametrize("client", CLIENTS)
def test_studies_without_a_patient_id_are_not_merged_into_one_patient(
    receiver, ct_modality, technologist, tmp_path, client
):
    first = make_dataset(patient_id="", patient_name="Zhang^San")
    second = make_dataset(patient_id="", patient_name="Li^Si")
    later = make_dataset(study_uid=first.StudyInstanceUID, patient_id="", patient_name="Zhang^San", instance_number=2)
    for ds in (first, second, later):
        assert SENDERS[client](receiver, ct_modality.ae_title, ds, tmp_path).status == 0x0000

    one = Study.objects.get(study_uid=first.StudyInstanceUID)
    two = Study.objects.get(study_uid=second.StudyInstanceUID)
    assert one.patient_id != two.patient_id
    assert services.study_instances(one) == 2
    assert (one.patient.patient_id, one.patient.name) == ("", "Zhang^San")
    assert (two.patient.patient_id, two.patient.name) == ("", "Li^Si")
    assert Patient.objects.filter(facility=ct_modality.facility, patient_id="").count() == 2
    assert one.patient_id_missing and two.patient_id_missing
    assert township_page(technologist, ct_modality.facility).count('data-flag="no-patient-id"') == 2


def test_a_study_without_a_patient_id_has_no_priors(receiver, ct_modality, radiologist, tmp_path):
    first = make_dataset(patient_id="", patient_name="Zhang^San", study_date=date(2025, 1, 1))
    second = make_dataset(patient_id="", patient_name="Li^Si")
    for ds in (first, second):
        assert send_pynetdicom(receiver, ct_modality.ae_title, ds, tmp_path).status == 0x0000
    study = Study.objects.get(study_uid=second.StudyInstanceUID)
    Study.objects.filter(pk=study.pk).update(status=Study.Status.ARRIVED)
    consult = open_consult_for_study(study)
    client = Client()
    client.force_login(radiologist)
    page = client.get(reverse("reading:page", args=[consult.uuid])).content.decode()
    assert "2025-01-01" not in page
    assert 'data-flag="no-patient-id"' in page


@pytest.mark.parametrize("client", CLIENTS)
def test_another_name_under_a_known_patient_id_is_kept_on_the_study_and_flagged(
    receiver, ct_modality, technologist, tmp_path, client
):
    first = make_dataset(patient_id="XW-0001", patient_name="Zhang^San", PatientSex="M")
    second = make_dataset(patient_id="XW-0001", patient_name="Li^Si", PatientSex="F")
    for ds in (first, second):
        assert SENDERS[client](receiver, ct_modality.ae_title, ds, tmp_path).status == 0x0000

    patient = Patient.objects.get(facility=ct_modality.facility, patient_id="XW-0001")
    assert (patient.name, patient.name_alphabetic, patient.sex) == ("Zhang^San", "Zhang^San", "M")
    one = Study.objects.get(study_uid=first.StudyInstanceUID)
    two = Study.objects.get(study_uid=second.StudyInstanceUID)
    assert one.patient == two.patient == patient
    assert (one.patient_name_received, one.patient_name_conflict) == ("Zhang^San", False)
    assert (two.patient_name_received, two.patient_name_conflict) == ("Li^Si", True)
    page = township_page(technologist, ct_modality.facility)
    assert page.count('data-flag="name-conflict"') == 1
    assert "姓名与患者记录不一致：Li Si" in page


def test_the_same_name_written_another_way_is_no_conflict(receiver, ct_modality, tmp_path):
    first = make_dataset(patient_id="XW-0002", patient_name="Zhang^San=张^三", character_set="ISO_IR 192")
    second = make_dataset(patient_id="XW-0002", patient_name="ZHANG^SAN")
    third = make_dataset(patient_id="XW-0002", patient_name="=张^三", character_set="ISO_IR 192")
    for ds in (first, second, third):
        assert send_pynetdicom(receiver, ct_modality.ae_title, ds, tmp_path).status == 0x0000
    assert not Study.objects.filter(patient_name_conflict=True).exists()


def test_a_later_image_of_the_study_with_another_name_flags_it(receiver, ct_modality, tmp_path):
    study_uid, series_uid = generate_uid(), generate_uid()
    first = make_dataset(study_uid=study_uid, series_uid=series_uid, patient_id="XW-0003", patient_name="Zhang^San")
    second = make_dataset(
        study_uid=study_uid, series_uid=series_uid, patient_id="XW-0003", patient_name="Li^Si", instance_number=2
    )
    for ds in (first, second):
        assert send_pynetdicom(receiver, ct_modality.ae_title, ds, tmp_path).status == 0x0000
    study = Study.objects.get(study_uid=study_uid)
    assert services.study_instances(study) == 2
    assert study.patient_name_conflict
    assert study.patient.name == "Zhang^San"


def test_a_new_study_completes_blank_demographics_but_changes_none(receiver, ct_modality, tmp_path):
    first = make_dataset(patient_id="XW-0004", patient_name="Zhang^San", PatientBirthDate="", PatientSex="")
    second = make_dataset(patient_id="XW-0004", patient_name="Zhang^San", PatientBirthDate="19600101", PatientSex="M")
    third = make_dataset(patient_id="XW-0004", patient_name="Zhang^San", PatientBirthDate="19700101", PatientSex="F")
    for ds in (first, second, third):
        assert send_pynetdicom(receiver, ct_modality.ae_title, ds, tmp_path).status == 0x0000
    patient = Patient.objects.get(patient_id="XW-0004")
    assert (patient.birth_date, patient.sex) == (date(1960, 1, 1), "M")
