"""consults.rules: one answer to "what may this user do to this consult", the same for the
page and the service. One test for each place where the two used to disagree."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from consults import delivery, workflow
from consults.models import CriticalFinding, ReportDelivery
from consults.rules import Step
from facilities.models import User
from tests.conftest import login
from tests.factories import make_consult, make_study, make_user


@pytest.fixture
def consult(township, ct_modality):
    return make_consult(township, make_study(township, ct_modality), body_part_names="胸部")


@pytest.fixture
def township_admin(township) -> User:
    """An administrator who belongs to the township: a role that neither reads nor acknowledges."""
    return make_user(User.Role.ADMINISTRATOR, township, username="admin_xuanwo")


def test_only_the_townships_technologist_may_acknowledge_a_critical_finding(
    consult, radiologist, technologist, township_admin
):
    """The page offered the button to the township's technologists while the service let any
    non-radiologist of the township acknowledge: an administrator of it could."""
    finding = workflow.flag_critical(consult, radiologist, "气胸")
    assert Step.ACKNOWLEDGE not in workflow.allowed_steps(township_admin, consult)
    with pytest.raises(workflow.NotAllowed):
        workflow.acknowledge_critical(finding, township_admin)
    with pytest.raises(workflow.NotAllowed):
        workflow.acknowledge_critical(finding, radiologist)
    finding.refresh_from_db()
    assert finding.acknowledged_at is None

    assert Step.ACKNOWLEDGE in workflow.allowed_steps(technologist, consult)
    workflow.acknowledge_critical(finding, technologist)
    assert CriticalFinding.objects.get(pk=finding.pk).acknowledged_by == technologist


def test_the_request_correction_is_offered_by_the_same_facility_check_the_service_makes(
    consult, technologist, outsider
):
    """The page offered "correct the request" to any technologist, without the facility
    check that correct_request makes."""
    assert Step.CORRECT_REQUEST in workflow.allowed_steps(technologist, consult)
    assert Step.CORRECT_REQUEST not in workflow.allowed_steps(outsider, consult)
    with pytest.raises(workflow.NotAllowed):
        workflow.correct_request(consult, outsider, question="别院的修改")
    assert workflow.allowed_steps(outsider, consult) == frozenset()


@pytest.fixture
def failed_send_back(consult, ct_modality, radiologist) -> ReportDelivery:
    ct_modality.host, ct_modality.port = "127.0.0.1", 104
    ct_modality.save()
    workflow.claim_consult(consult, radiologist)
    workflow.sign_final(consult, radiologist, "所见", "意见")
    outbox = ReportDelivery.objects.get(consult=consult)
    ReportDelivery.objects.filter(pk=outbox.pk).update(status=ReportDelivery.Status.FAILED)
    outbox.refresh_from_db()
    return outbox


def test_the_retry_of_a_send_back_checks_who_asks(
    failed_send_back, outsider, administrator, township_admin, technologist
):
    """delivery.retry had no check of its own: only the view's role decorator stood before it."""
    consult = failed_send_back.consult
    for stranger in (outsider, administrator, township_admin):
        assert Step.RETRY_DELIVERY not in workflow.allowed_steps(stranger, consult)
        with pytest.raises(workflow.NotAllowed):
            delivery.retry(failed_send_back, stranger)
    assert ReportDelivery.objects.get(pk=failed_send_back.pk).status == ReportDelivery.Status.FAILED

    assert Step.RETRY_DELIVERY in workflow.allowed_steps(technologist, consult)
    assert delivery.retry(failed_send_back, technologist) is True
    assert ReportDelivery.objects.get(pk=failed_send_back.pk).status == ReportDelivery.Status.PENDING
    # Not failed any more: refused for the consult's state, with the page's message.
    with pytest.raises(workflow.WorkflowError, match="没有失败"):
        delivery.retry(failed_send_back, technologist)


def test_opening_a_consult_given_by_the_roster_is_a_post_of_its_reader(consult, radiologist, technologist_client):
    """The page used to open the consult when its reader merely looked at it."""
    from tests.factories import make_shift

    make_shift(radiologist, timezone.now() - timedelta(hours=1))
    assert workflow.assign_consult(consult) == radiologist
    reader = login(radiologist)
    page = reverse("reading:page", args=[consult.uuid])
    assert reverse("reading:open", args=[consult.uuid]) in reader.get(page).content.decode()
    consult.refresh_from_db()
    assert (consult.status, consult.opened_at) == ("assigned", None)

    assert reader.post(reverse("reading:open", args=[consult.uuid])).status_code == 302
    consult.refresh_from_db()
    assert consult.status == "opened" and consult.opened_at is not None
    assert technologist_client.post(reverse("reading:open", args=[consult.uuid])).status_code == 403


@pytest.mark.parametrize(
    ("posted", "message"),
    [
        ({"body_parts": "0"}, "部位数至少为 1。"),
        ({"body_parts": "两个"}, "部位数至少为 1。"),
        ({"priority": "whenever"}, "无效的优先级。"),
    ],
)
def test_a_bad_request_correction_gets_the_rules_message_and_changes_nothing(
    consult, technologist_client, posted, message
):
    """One message per check, from consults.rules, whether the form or the service finds it:
    the form shows it beside its field, on the page again with what was typed."""
    before = (consult.body_parts, consult.priority, consult.question)
    response = technologist_client.post(reverse("reading:request", args=[consult.uuid]), {**posted, "question": "改了"})
    assert response.status_code == 400
    body = response.content.decode()
    assert message in body
    assert "改了</textarea>" in body
    consult.refresh_from_db()
    assert (consult.body_parts, consult.priority, consult.question) == before


def test_the_service_refuses_a_bad_request_with_the_same_messages(consult, technologist):
    with pytest.raises(workflow.WorkflowError, match="部位数至少为 1。"):
        workflow.correct_request(consult, technologist, body_parts=0)
    with pytest.raises(workflow.WorkflowError, match="无效的优先级。"):
        workflow.correct_request(consult, technologist, priority="whenever")
