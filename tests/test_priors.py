"""A patient's earlier studies (priors): the same facility's Patient ID, or across townships
only an identifier from an issuer every facility shares (a national ID in Other Patient IDs
Sequence); never a bare Patient ID. The reading page and the viewer offer exactly those the
user may open."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from django.urls import reverse
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from cloudpacs.models import PatientIdentifier, Study
from cloudpacs.services import ingest_instance, same_patient_studies
from cloudpacs.views.viewer import viewer_context
from consults.models import Consult
from facilities.models import ExamKind
from tests.factories import make_consult, make_dataset, make_modality, write_dataset

NATIONAL = "CN_RESIDENT_ID"


@pytest.fixture(autouse=True)
def _shared_issuer(settings) -> None:
    settings.SHARED_PATIENT_ID_ISSUERS = [NATIONAL]


def other_ids(*pairs: tuple[str, str]) -> Sequence:
    items = []
    for issuer, value in pairs:
        item = Dataset()
        item.PatientID = value
        item.IssuerOfPatientID = issuer
        items.append(item)
    return Sequence(items)


def store(tmp_path: Path, modality, patient_id: str, *, year: int = 2025, issuer: str = "", ids=()) -> Study:
    extra = {"OtherPatientIDsSequence": other_ids(*ids)} if ids else {}
    if issuer:
        extra["IssuerOfPatientID"] = issuer
    ds = make_dataset(patient_id=patient_id, study_date=date(year, 9, 1), **extra)
    path = write_dataset(ds, tmp_path / f"{ds.SOPInstanceUID}.dcm")
    ingest_instance(
        path,
        transfer_syntax_uid=ds.file_meta.TransferSyntaxUID,
        sop_class_uid=ds.SOPClassUID,
        sop_instance_uid=ds.SOPInstanceUID,
        modality=modality,
    )
    return Study.objects.get(study_uid=ds.StudyInstanceUID)


def test_the_same_facilitys_patient_id_links_its_studies(tmp_path, ct_modality):
    current = store(tmp_path, ct_modality, "P100")
    prior = store(tmp_path, ct_modality, "P100", year=2024)
    store(tmp_path, ct_modality, "P101", year=2024)
    assert list(same_patient_studies(current)) == [prior]


def test_a_bare_patient_id_never_links_two_townships(tmp_path, ct_modality, other_township):
    elsewhere = make_modality(other_township, ExamKind.CT, "OTHER_CT")
    current = store(tmp_path, ct_modality, "P100")
    store(tmp_path, elsewhere, "P100", year=2024)
    assert list(same_patient_studies(current)) == []


def test_a_shared_national_id_in_other_patient_ids_links_two_townships(tmp_path, ct_modality, other_township):
    elsewhere = make_modality(other_township, ExamKind.CT, "OTHER_CT")
    current = store(tmp_path, ct_modality, "P100", ids=[(NATIONAL, "610921196001010011")])
    prior = store(tmp_path, elsewhere, "X-77", year=2024, ids=[(NATIONAL, "610921196001010011")])
    # The same number from an issuer that is not shared, or of another person, links nothing.
    store(tmp_path, elsewhere, "X-78", year=2024, ids=[("XUANWO_HIS", "610921196001010011")])
    store(tmp_path, elsewhere, "X-79", year=2024, ids=[(NATIONAL, "610921196001010022")])
    assert list(same_patient_studies(current)) == [prior]
    assert PatientIdentifier.objects.filter(issuer=NATIONAL).count() == 3


def test_a_national_id_used_as_the_patient_id_with_its_issuer_links_too(tmp_path, ct_modality, other_township):
    elsewhere = make_modality(other_township, ExamKind.CT, "OTHER_CT")
    current = store(tmp_path, ct_modality, "610921196001010011", issuer=NATIONAL)
    prior = store(tmp_path, elsewhere, "X-77", year=2024, ids=[(NATIONAL, "610921196001010011")])
    assert list(same_patient_studies(current)) == [prior]


def test_without_a_shared_issuer_configured_nothing_links_across(settings, tmp_path, ct_modality, other_township):
    settings.SHARED_PATIENT_ID_ISSUERS = []
    elsewhere = make_modality(other_township, ExamKind.CT, "OTHER_CT")
    current = store(tmp_path, ct_modality, "P100", ids=[(NATIONAL, "610921196001010011")])
    store(tmp_path, elsewhere, "X-77", year=2024, ids=[(NATIONAL, "610921196001010011")])
    assert list(same_patient_studies(current)) == []


def test_an_identifier_without_an_issuer_is_not_kept(tmp_path, ct_modality):
    store(tmp_path, ct_modality, "P100", ids=[("", "610921196001010011")])
    assert not PatientIdentifier.objects.exists()


def test_the_reading_page_offers_a_prior_from_another_township_to_the_reader_only(
    tmp_path, ct_modality, other_township, radiologist_client, radiologist, technologist_client, technologist
):
    elsewhere = make_modality(other_township, ExamKind.CT, "OTHER_CT")
    current = store(tmp_path, ct_modality, "P100", ids=[(NATIONAL, "610921196001010011")])
    prior = store(tmp_path, elsewhere, "X-77", year=2024, ids=[(NATIONAL, "610921196001010011")])
    unread = store(tmp_path, ct_modality, "P100", year=2023)
    consult = make_consult(current.facility, current)
    make_consult(prior.facility, prior, status=Consult.Status.SIGNED)

    page = radiologist_client.get(reverse("reading:page", args=[consult.uuid])).content.decode()
    assert f'data-open-prior="{prior.study_uid}"' in page
    # A study the township never sent for reading is not the reader's to open.
    assert f'data-prior-study="{unread.study_uid}"' not in page
    assert [s.study_uid for s in viewer_context(current, radiologist)["viewer_priors"]] == [prior.study_uid]

    # The township sees its own archive only: its own earlier study, not the other township's.
    page = technologist_client.get(reverse("reading:page", args=[consult.uuid])).content.decode()
    assert f'data-prior-study="{prior.study_uid}"' not in page
    assert f'data-prior-study="{unread.study_uid}"' in page
    assert [s.study_uid for s in viewer_context(current, technologist)["viewer_priors"]] == [unread.study_uid]
