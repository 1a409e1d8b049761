"""A technologist asks for a consult from the township's page, for a stored study that has
none yet, with the clinical history, the body parts, a priority and a question."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from pydicom.uid import generate_uid

from cloudpacs import counts
from cloudpacs.models import Study
from consults.models import Consult, Priority
from consults.services import open_consult_for_study
from facilities.models import AuditEvent
from tests.dicomweb_support import ingest
from tests.factories import make_consult, make_dataset, make_shift, make_study

pytestmark = pytest.mark.django_db


@pytest.fixture
def study(township, ct_modality) -> Study:
    # Still arriving: the stability sweep has not made a consult of it yet.
    study = make_study(
        township, ct_modality, last_received_at=timezone.now() - timedelta(seconds=5), description="头颅 CT 平扫"
    )
    Study.objects.filter(pk=study.pk).update(status=Study.Status.RECEIVING)
    study.refresh_from_db()
    return study


def request_url(study: Study) -> str:
    return reverse("consults:request", args=[study.study_uid])


def facility_page(facility) -> str:
    return reverse("consults:facility", args=[facility.uuid])


def test_a_technologist_requests_a_consult_for_a_stored_study_with_its_details(
    township, study, radiologist, technologist, technologist_client, django_capture_on_commit_callbacks
):
    make_shift(radiologist, timezone.now() - timedelta(hours=1))
    assert request_url(study) in technologist_client.get(facility_page(township)).content.decode()

    with django_capture_on_commit_callbacks(execute=True):
        response = technologist_client.post(
            request_url(study),
            {
                "clinical_history": "突发头痛 2 小时，呕吐一次。",
                "body_part_names": "头颅",
                "body_parts": "1",
                "priority": "emergency",
                "question": "排除颅内出血",
            },
        )

    consult = Consult.objects.get(study=study)
    assert response.status_code == 302
    assert response["Location"] == reverse("consults:detail", args=[consult.uuid])
    assert (consult.clinical_history, consult.body_part_names, consult.priority, consult.question) == (
        "突发头痛 2 小时，呕吐一次。",
        "头颅",
        Priority.EMERGENCY,
        "排除颅内出血",
    )
    assert consult.arrived_at == study.last_received_at
    assert consult.due_at == consult.arrived_at + timedelta(minutes=30)  # emergency head CT
    assert consult.radiologist == radiologist  # offered to the reader on duty at once
    assert AuditEvent.objects.filter(
        action="consults.consult.requested", actor=technologist, object_id=str(consult.uuid)
    ).exists()
    assert request_url(study) not in technologist_client.get(facility_page(township)).content.decode()


def test_a_study_asked_for_while_arriving_arrived_when_its_newest_instance_did_not_at_the_sweeps_last_fold(
    township, ct_modality, technologist_client, tmp_path
):
    study_uid, series_uid = generate_uid(), generate_uid()
    first = ingest(make_dataset(study_uid=study_uid, series_uid=series_uid), ct_modality, tmp_path)
    assert counts.fold() == 1  # the sweep's last fold: last_received_at is the first's arrival
    newest = ingest(make_dataset(study_uid=study_uid, series_uid=series_uid, instance_number=2), ct_modality, tmp_path)
    study = Study.objects.get(study_uid=study_uid)
    assert (study.status, study.last_received_at) == (Study.Status.RECEIVING, first.received_at)
    assert newest.received_at > first.received_at

    technologist_client.post(request_url(study), {"priority": "urgent", "body_parts": "1"})

    consult = Consult.objects.get(study=study)
    assert consult.arrived_at == newest.received_at


def test_the_stability_sweep_later_keeps_the_requested_consult(township, study, technologist_client):
    technologist_client.post(request_url(study), {"priority": "urgent", "body_parts": "2"})

    assert open_consult_for_study(study) == Consult.objects.get(study=study)
    consult = Consult.objects.get()
    assert (consult.priority, consult.body_parts) == (Priority.URGENT, 2)


def test_a_study_that_already_has_a_consult_sends_the_technologist_to_it(township, study, technologist_client):
    existing = make_consult(township, study)

    response = technologist_client.post(request_url(study), {"priority": "emergency"})

    assert response.status_code == 302
    assert response["Location"] == reverse("consults:detail", args=[existing.uuid])
    assert Consult.objects.get().priority == Priority.ROUTINE


def test_a_body_part_count_below_one_is_refused_beside_it_and_the_request_is_kept(township, study, technologist_client):
    response = technologist_client.post(
        request_url(study), {"body_parts": "0", "clinical_history": "摔伤后右腕肿痛", "priority": "emergency"}
    )

    assert response.status_code == 400
    body = response.content.decode()
    assert 'id="request-part-count-errors"' in body and "部位数至少为 1。" in body
    assert "摔伤后右腕肿痛</textarea>" in body
    assert '<option value="emergency" selected>' in body
    assert not Consult.objects.exists()


def test_a_body_part_count_that_is_no_number_and_an_unknown_priority_are_each_refused_beside_them(
    township, study, technologist_client
):
    response = technologist_client.post(request_url(study), {"body_parts": "两个", "priority": "soon"})

    assert response.status_code == 400
    body = response.content.decode()
    assert 'id="request-part-count-errors"' in body and "部位数至少为 1。" in body
    assert 'id="request-priority-errors"' in body and "无效的优先级。" in body
    assert not Consult.objects.exists()


def test_only_the_townships_technologist_may_request(study, outsider_client, radiologist_client, client):
    assert outsider_client.post(request_url(study)).status_code == 404
    assert radiologist_client.post(request_url(study)).status_code == 403
    assert client.post(request_url(study)).status_code == 302  # to the login page
    assert not Consult.objects.exists()


def test_the_request_form_opens_on_get_for_the_townships_technologist(study, technologist_client, outsider_client):
    response = technologist_client.get(request_url(study))

    assert response.status_code == 200
    body = response.content.decode()
    assert 'name="clinical_history"' in body and 'name="priority"' in body
    assert '<label for="request-history">' in body
    assert outsider_client.get(request_url(study)).status_code == 404


def test_get_on_a_study_with_a_consult_goes_to_its_report_page(township, study, technologist_client):
    existing = make_consult(township, study)

    response = technologist_client.get(request_url(study))

    assert response.status_code == 302
    assert response["Location"] == reverse("consults:detail", args=[existing.uuid])
