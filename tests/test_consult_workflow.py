"""The reading workflow's services: assignment by roster and load, claim and lock, release,
reassignment when a reader goes off duty, signing in one or two steps, addenda, and the
technologist's corrections."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from consults import workflow
from consults.models import Assignment, Consult, Escalation, Report
from facilities.models import AuditEvent, ExamKind, User
from tests.factories import make_consult, make_shift, make_study, make_user


@pytest.fixture
def now():
    return timezone.now().replace(microsecond=0)


@pytest.fixture
def ct_consult(township, ct_modality, now):
    return make_consult(township, make_study(township, ct_modality), arrived_at=now - timedelta(minutes=5))


def reader(name: str, **fields) -> User:
    return make_user(User.Role.RADIOLOGIST, None, username=name, display_name=name, **fields)


def give_load(user: User, facility, count: int) -> None:
    for _ in range(count):
        consult = make_consult(facility)
        workflow.claim_consult(consult, user)


def actions(consult: Consult) -> list[str]:
    return list(
        AuditEvent.objects.filter(object_id=str(consult.uuid)).order_by("at", "id").values_list("action", flat=True)
    )


def test_an_arrived_consult_goes_to_the_least_loaded_qualified_reader_on_duty(township, ct_consult, now):
    busy = reader("busy")
    free = reader("free")
    dr_only = reader("dr_only", reads_ct=False)
    off_duty = reader("off_duty")
    for user in (busy, free, dr_only):
        make_shift(user, now - timedelta(hours=1))
    make_shift(off_duty, now - timedelta(hours=10))
    give_load(busy, township, 2)

    assert workflow.assign_consult(ct_consult, now) == free

    ct_consult.refresh_from_db()
    assert ct_consult.radiologist == free
    assert ct_consult.status == Consult.Status.ASSIGNED
    assert ct_consult.assignment == Assignment.ROSTER
    assert ct_consult.assigned_at == now
    assert "consults.consult.assigned" in actions(ct_consult)


def test_the_next_consult_goes_to_the_reader_who_now_has_less(township, ct_modality, now):
    first, second = reader("first"), reader("second")
    make_shift(first, now - timedelta(hours=1))
    make_shift(second, now - timedelta(hours=1))
    a = make_consult(township, make_study(township, ct_modality), arrived_at=now)
    b = make_consult(township, make_study(township, ct_modality), arrived_at=now)

    assert {workflow.assign_consult(a, now), workflow.assign_consult(b, now)} == {first, second}


def test_with_nobody_on_duty_the_consult_waits_in_the_shared_worklist(ct_consult, now):
    make_shift(reader("tomorrow"), now + timedelta(hours=12))

    assert workflow.assign_consult(ct_consult, now) is None
    ct_consult.refresh_from_db()
    assert ct_consult.status == Consult.Status.ARRIVED
    assert ct_consult.radiologist is None


def test_a_claimed_consult_is_locked_to_its_reader(ct_consult):
    li, wang = reader("li"), reader("wang", is_senior=True)
    workflow.claim_consult(ct_consult, li)

    ct_consult.refresh_from_db()
    assert ct_consult.radiologist == li
    assert ct_consult.assignment == Assignment.CLAIMED
    assert ct_consult.claimed_at is not None
    with pytest.raises(workflow.NotAllowed):
        workflow.claim_consult(ct_consult, wang)
    with pytest.raises(workflow.NotAllowed):
        workflow.save_draft(ct_consult, wang, "所见", "意见")
    with pytest.raises(workflow.NotAllowed):
        workflow.sign_final(ct_consult, wang, "所见", "意见")
    with pytest.raises(workflow.NotAllowed):
        workflow.release_consult(ct_consult, wang)
    assert not Report.objects.filter(consult=ct_consult).exists()


def test_a_reader_not_qualified_for_the_modality_cannot_claim(ct_consult):
    with pytest.raises(workflow.NotAllowed):
        workflow.claim_consult(ct_consult, reader("dr_only", reads_ct=False))


def test_a_released_consult_goes_back_to_the_worklist_for_another_reader(ct_consult):
    li, wang = reader("li"), reader("wang")
    workflow.claim_consult(ct_consult, li)
    workflow.save_draft(ct_consult, li, "双肺纹理清晰。", "")
    workflow.release_consult(ct_consult, li)

    ct_consult.refresh_from_db()
    assert ct_consult.status == Consult.Status.ARRIVED
    assert ct_consult.radiologist is None
    workflow.claim_consult(ct_consult, wang)
    report = workflow.save_draft(ct_consult, wang, "双肺纹理清晰。", "未见异常。")
    assert report.author == wang
    assert actions(ct_consult)[:4] == [
        "consults.consult.claimed",
        "consults.consult.opened",
        "consults.report.saved",
        "consults.consult.released",
    ]


def test_a_reader_going_off_duty_has_their_consults_reassigned(township, ct_consult, now):
    leaving, coming = reader("leaving"), reader("coming")
    make_shift(leaving, now - timedelta(hours=7), hours=7.5)
    make_shift(coming, now + timedelta(minutes=30), hours=8)
    assert workflow.assign_consult(ct_consult, now) == leaving

    workflow.check_consult_deadlines(now + timedelta(minutes=45))

    ct_consult.refresh_from_db()
    assert ct_consult.radiologist == coming
    assert ct_consult.assignment == Assignment.REASSIGNED
    escalation = Escalation.objects.get(consult=ct_consult, reason=Escalation.Reason.OFF_DUTY)
    assert escalation.from_radiologist == leaving
    assert escalation.to_user == coming
    assert "consults.consult.reassigned" in actions(ct_consult)


def test_a_reader_who_claimed_without_a_shift_keeps_the_consult(ct_consult, now):
    volunteer = reader("volunteer")
    workflow.claim_consult(ct_consult, volunteer, now)

    workflow.check_consult_deadlines(now + timedelta(minutes=1))

    ct_consult.refresh_from_db()
    assert ct_consult.radiologist == volunteer


def test_the_duty_lead_reassigns_a_consult_to_a_named_reader(ct_consult, now):
    lead, holder, other = reader("lead"), reader("holder"), reader("other")
    make_shift(lead, now - timedelta(hours=1), is_lead=True)
    make_shift(other, now - timedelta(hours=1))
    workflow.claim_consult(ct_consult, holder)

    with pytest.raises(workflow.NotAllowed):
        workflow.reassign_consult(ct_consult, by=other, to=other)
    assert workflow.reassign_consult(ct_consult, by=lead, to=other) == other
    ct_consult.refresh_from_db()
    assert ct_consult.radiologist == other


def test_direct_signing_makes_the_report_immutable(ct_consult):
    li = reader("li")
    workflow.claim_consult(ct_consult, li)
    report = workflow.sign_final(ct_consult, li, "右肺上叶见一结节，直径约 8 mm。", "右肺上叶结节，建议随访。")

    ct_consult.refresh_from_db()
    assert ct_consult.status == Consult.Status.SIGNED
    assert ct_consult.signed_at == report.signed_at
    assert ct_consult.opened_at is not None
    assert report.signed_by == li and report.author == li
    report.findings = "改过的所见"
    with pytest.raises(ValidationError):
        report.save()
    with pytest.raises(workflow.WorkflowError):
        workflow.save_draft(ct_consult, li, "改过的所见", "改过的意见")
    with pytest.raises(workflow.WorkflowError):
        workflow.sign_final(ct_consult, li, "改过的所见", "改过的意见")
    report.refresh_from_db()
    assert report.findings == "右肺上叶见一结节，直径约 8 mm。"
    assert "consults.report.signed" in actions(ct_consult)


def test_a_report_without_an_impression_cannot_be_signed(ct_consult):
    li = reader("li")
    workflow.claim_consult(ct_consult, li)
    with pytest.raises(workflow.WorkflowError):
        workflow.sign_final(ct_consult, li, "所见", "  ")
    ct_consult.refresh_from_db()
    assert ct_consult.signed_at is None


def test_a_facility_requiring_review_needs_a_preliminary_and_a_second_senior(township, ct_consult):
    township.requires_second_signature = True
    township.save()
    junior, other_junior, senior = reader("junior"), reader("other_junior"), reader("senior", is_senior=True)
    workflow.claim_consult(ct_consult, junior)

    with pytest.raises(workflow.WorkflowError):
        workflow.sign_final(ct_consult, junior, "所见", "意见")
    workflow.sign_preliminary(ct_consult, junior, "肝脏形态正常。", "上腹部 CT 未见异常。")
    ct_consult.refresh_from_db()
    assert ct_consult.status == Consult.Status.PRELIMINARY
    assert ct_consult.preliminary_at is not None
    with pytest.raises(workflow.NotAllowed):
        workflow.sign_final(ct_consult, junior)
    with pytest.raises(workflow.NotAllowed):
        workflow.sign_final(ct_consult, other_junior)

    report = workflow.sign_final(ct_consult, senior, "肝脏形态正常。", "上腹部 CT 平扫未见明显异常。")

    assert report.preliminary_by == junior
    assert report.signed_by == senior
    assert report.author == junior
    assert report.impression == "上腹部 CT 平扫未见明显异常。"
    ct_consult.refresh_from_db()
    assert ct_consult.status == Consult.Status.SIGNED
    assert ct_consult.preliminary_at <= ct_consult.signed_at
    assert [a for a in actions(ct_consult) if a.startswith("consults.report.") and a != "consults.report.saved"] == [
        "consults.report.preliminary",
        "consults.report.signed",
    ]


def test_a_senior_cannot_review_their_own_preliminary_report(township, ct_consult):
    township.requires_second_signature = True
    township.save()
    senior = reader("senior", is_senior=True)
    workflow.claim_consult(ct_consult, senior)
    workflow.sign_preliminary(ct_consult, senior, "所见", "意见")

    with pytest.raises(workflow.NotAllowed):
        workflow.sign_final(ct_consult, senior)


def test_preliminary_signing_is_refused_where_the_facility_signs_directly(ct_consult):
    li = reader("li")
    workflow.claim_consult(ct_consult, li)
    with pytest.raises(workflow.WorkflowError):
        workflow.sign_preliminary(ct_consult, li, "所见", "意见")


def test_addenda_follow_a_signed_report_in_order_with_author_and_time(ct_consult):
    li, wang = reader("li"), reader("wang")
    workflow.claim_consult(ct_consult, li)
    with pytest.raises(workflow.WorkflowError):
        workflow.add_addendum(ct_consult, li, "太早的补充")
    report = workflow.sign_final(ct_consult, li, "所见", "意见")

    workflow.add_addendum(ct_consult, li, "补充：左肺下叶亦见小结节。")
    workflow.add_addendum(ct_consult, wang, "复核：同意上述补充。")

    addenda = list(report.addenda.all())
    assert [(a.author, a.text) for a in addenda] == [
        (li, "补充：左肺下叶亦见小结节。"),
        (wang, "复核：同意上述补充。"),
    ]
    assert all(a.created_at >= report.signed_at for a in addenda)
    report.refresh_from_db()
    assert report.impression == "意见"
    assert actions(ct_consult).count("consults.report.addendum") == 2


def test_the_technologist_corrects_the_request_until_a_reader_opens_it(township, technologist, outsider, ct_consult):
    workflow.correct_request(
        ct_consult, technologist, priority="emergency", body_part_names="头颅", clinical_history="外伤后头痛 2 小时"
    )
    ct_consult.refresh_from_db()
    assert ct_consult.priority == "emergency"
    assert ct_consult.due_at == ct_consult.arrived_at + timedelta(minutes=30)
    with pytest.raises(workflow.NotAllowed):
        workflow.correct_request(ct_consult, outsider, question="别院的修改")

    li = reader("li")
    workflow.claim_consult(ct_consult, li)  # a claim opens the consult
    with pytest.raises(workflow.RequestLocked):
        workflow.correct_request(ct_consult, technologist, question="太晚的修改")
    assert "consults.consult.corrected" in actions(ct_consult)


def test_every_step_is_time_stamped_from_arrival_to_delivery(ct_consult, technologist, now):
    li = reader("li")
    make_shift(li, now - timedelta(hours=1))
    steps = [now + timedelta(minutes=m) for m in (1, 2, 10, 11)]
    workflow.assign_consult(ct_consult, steps[0])
    workflow.open_consult(ct_consult, li, steps[1])
    workflow.sign_final(ct_consult, li, "所见", "意见", steps[2])
    workflow.mark_delivered(ct_consult, user=technologist, now=steps[3])

    ct_consult.refresh_from_db()
    assert (ct_consult.assigned_at, ct_consult.opened_at, ct_consult.signed_at, ct_consult.delivered_at) == tuple(steps)
    assert ct_consult.status == Consult.Status.DELIVERED
    assert actions(ct_consult) == [
        "consults.consult.assigned",
        "consults.consult.opened",
        "consults.report.signed",
        "consults.report.delivered",
    ]


@pytest.mark.django_db(transaction=True)
def test_two_readers_claiming_at_once_get_one_winner(township):
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    from django.db import connections

    readers = [reader(f"racer{i}") for i in range(2)]
    consult = make_consult(township, kind=ExamKind.CT)
    start = Barrier(2)

    def claim(user: User) -> str:
        try:
            start.wait()
            workflow.claim_consult(Consult.objects.get(pk=consult.pk), user)
            return "won"
        except workflow.WorkflowError:
            return "refused"
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = sorted(pool.map(claim, readers))

    assert outcomes == ["refused", "won"]
    consult.refresh_from_db()
    assert consult.radiologist in readers
    assert AuditEvent.objects.filter(action="consults.consult.claimed", object_id=str(consult.uuid)).count() == 1
