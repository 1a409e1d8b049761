"""The administrators' view of open consults: who holds what, what is overdue, the filters,
and the bulk reassignment when a reader is away (all or none, audited per consult)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from consults import workflow
from consults.models import Consult, Priority
from consults.rules import NotAllowed, WorkflowError, allowed_steps, move_refusal
from facilities.models import AuditEvent, ExamKind, User
from tests.conftest import login
from tests.factories import make_consult, make_shift, make_user

pytestmark = pytest.mark.django_db

PAGE = "consults:open_consults"
BULK = "consults:bulk_reassign"


@pytest.fixture
def away(county) -> User:
    """The reader who is away: holds consults, no shift now."""
    return make_user(
        User.Role.RADIOLOGIST, county, username="dr_zhao", display_name="赵医生", reads_ct=True, reads_dr=True
    )


@pytest.fixture
def stand_in(county) -> User:
    """The reader on duty who takes them over."""
    reader = make_user(
        User.Role.RADIOLOGIST, county, username="dr_qian", display_name="钱医生", reads_ct=True, reads_dr=True
    )
    make_shift(reader, timezone.now() - timedelta(hours=1))
    return reader


def held(facility, reader: User, *, kind: str = ExamKind.CT, minutes_ago: int = 10, opened: bool = False, **fields):
    """A consult given to `reader` that arrived `minutes_ago`, its limit stored as on arrival."""
    arrived = timezone.now() - timedelta(minutes=minutes_ago)
    consult = make_consult(
        facility,
        kind=kind,
        arrived_at=arrived,
        radiologist=reader,
        assigned_at=arrived,
        opened_at=arrived if opened else None,
        status=Consult.Status.OPENED if opened else Consult.Status.ASSIGNED,
        **fields,
    )
    Consult.objects.filter(pk=consult.pk).update(due_at=workflow.due_at_for(consult))
    consult.refresh_from_db()
    return consult


# ---------------------------------------------------------------------------- who may see it


def test_an_administrator_sees_the_page(administrator_client):
    assert administrator_client.get(reverse(PAGE)).status_code == 200


def test_a_technologist_and_a_radiologist_get_403(technologist_client, radiologist_client):
    for client in (technologist_client, radiologist_client):
        assert client.get(reverse(PAGE)).status_code == 403
        assert client.post(reverse(BULK), {}).status_code == 403


def test_a_stranger_is_sent_to_sign_in(client):
    response = client.get(reverse(PAGE))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_the_bulk_reassignment_is_a_post(administrator_client):
    assert administrator_client.get(reverse(BULK)).status_code == 405


# ---------------------------------------------------------------------------- who holds what


def test_it_counts_what_each_reader_holds_and_what_is_overdue(township, away, stand_in, administrator):
    held(township, away, minutes_ago=300)  # routine CT: 240 minutes, overdue
    held(township, away, minutes_ago=10, opened=True)
    held(township, stand_in, kind=ExamKind.DR, minutes_ago=5)
    waiting = make_consult(township, kind=ExamKind.DR, arrived_at=timezone.now() - timedelta(hours=3))
    Consult.objects.filter(pk=waiting.pk).update(due_at=workflow.due_at_for(waiting))  # DR: 120 minutes, overdue
    make_consult(township, status=Consult.Status.SIGNED)  # not open: not counted

    holders = {h.radiologist.username if h.radiologist else None: h for h in workflow.holders()}
    assert (holders["dr_zhao"].assigned, holders["dr_zhao"].opened, holders["dr_zhao"].overdue) == (1, 1, 1)
    assert not holders["dr_zhao"].on_duty
    assert (holders["dr_qian"].assigned, holders["dr_qian"].overdue, holders["dr_qian"].on_duty) == (1, 0, True)
    assert (holders[None].waiting, holders[None].overdue) == (1, 1)

    page = login(administrator).get(reverse(PAGE)).content.decode()
    assert 'id="open-total">4<' in page
    assert 'id="overdue-total">2<' in page
    assert "赵医生" in page and "钱医生" in page


def test_the_list_puts_the_most_overdue_first_and_shows_no_patient(township, away, administrator):
    late = held(township, away, minutes_ago=400)
    later = held(township, away, minutes_ago=300)
    fresh = held(township, away, minutes_ago=5, priority=Priority.EMERGENCY)
    page = login(administrator).get(reverse(PAGE)).content.decode()
    assert page.index(str(late.uuid)) < page.index(str(later.uuid)) < page.index(str(fresh.uuid))
    assert "已超时" in page
    # Each consult's history is its audit trail.
    assert f"/audit/?object_id={late.uuid}" in page
    assert "患者" not in page


def test_the_filters_narrow_the_list(township, other_township, away, stand_in, administrator):
    ct = held(township, away, minutes_ago=300)
    dr = held(other_township, stand_in, kind=ExamKind.DR, minutes_ago=5, priority=Priority.URGENT)
    waiting = make_consult(township, kind=ExamKind.DR)
    client = login(administrator)

    def listed(**query) -> set[str]:
        page = client.get(reverse(PAGE), query).content.decode()
        return {str(c.uuid) for c in (ct, dr, waiting) if f'data-consult="{c.uuid}"' in page}

    assert listed() == {str(ct.uuid), str(dr.uuid), str(waiting.uuid)}
    assert listed(township=str(other_township.uuid)) == {str(dr.uuid)}
    assert listed(kind="DR") == {str(dr.uuid), str(waiting.uuid)}
    assert listed(priority="urgent") == {str(dr.uuid)}
    assert listed(radiologist=str(away.uuid)) == {str(ct.uuid)}
    assert listed(radiologist="none") == {str(waiting.uuid)}
    assert listed(overdue="on") == {str(ct.uuid)}


def test_a_bad_filter_shows_nothing_and_says_so(administrator_client):
    response = administrator_client.get(reverse(PAGE), {"priority": "whenever"})
    assert response.status_code == 400


# ---------------------------------------------------------------------------- the bulk reassignment


def test_an_administrator_may_move_open_consults_but_takes_no_step_of_the_reading_page():
    administrator = User(role=User.Role.ADMINISTRATOR, is_active=True)
    for status in (Consult.Status.ARRIVED, Consult.Status.ASSIGNED, Consult.Status.OPENED):
        assert move_refusal(administrator, Consult(status=status, kind=ExamKind.CT)) is None
    for status in (Consult.Status.PRELIMINARY, Consult.Status.SIGNED, Consult.Status.CANCELLED):
        assert isinstance(move_refusal(administrator, Consult(status=status)), WorkflowError)
    assert allowed_steps(administrator, Consult(status=Consult.Status.ASSIGNED, kind=ExamKind.CT)) == frozenset()
    radiologist = User(role=User.Role.RADIOLOGIST, is_active=True, is_senior=True, reads_ct=True)
    assert isinstance(move_refusal(radiologist, Consult(status=Consult.Status.ASSIGNED)), NotAllowed)


def test_the_ticked_consults_go_to_the_reader_on_duty_each_audited(township, away, stand_in, administrator):
    consults = [held(township, away, minutes_ago=300), held(township, away, opened=True), held(township, away)]
    response = login(administrator).post(
        reverse(BULK),
        {"consults": [str(c.uuid) for c in consults], "to": str(stand_in.uuid), "note": "赵医生请假"},
        follow=True,
    )
    assert "已将 3 例会诊转给 钱医生。" in response.content.decode()
    for consult in consults:
        consult.refresh_from_db()
        assert consult.radiologist == stand_in
        assert consult.status == Consult.Status.ASSIGNED  # the new reader opens it
        assert consult.assignment == "reassigned"
        event = AuditEvent.objects.get(action="consults.consult.reassigned", object_id=str(consult.uuid))
        assert event.actor == administrator
        assert event.detail == {
            "previous": "dr_zhao",
            "radiologist": "dr_qian",
            "reason": "administrator",
            "note": "赵医生请假",
        }
    # The consult's history (the audit page searched by its id) shows it, by name.
    history = login(administrator).get(reverse("audit"), {"object_id": str(consults[0].uuid)}).content.decode()
    assert "重新分配会诊" in history and "赵医生请假" in history
    # The new reader finds them on their worklist as theirs, as after a single reassignment.
    worklist = login(stand_in).get(reverse("consults:worklist"), {"mine": "1"}).content.decode()
    assert all(str(c.uuid) in worklist for c in consults)


def test_after_a_bulk_reassignment_the_page_comes_back_with_its_own_filters_only(township, stand_in, administrator):
    waiting = make_consult(township, kind=ExamKind.DR)
    query = f"township={township.uuid}&kind=DR&page=2&next=https://evil.example/&overdue=on"
    response = login(administrator).post(
        reverse(BULK), {"consults": [str(waiting.uuid)], "to": str(stand_in.uuid), "query": query}
    )
    assert response["Location"] == f"{reverse(PAGE)}?township={township.uuid}&kind=DR&overdue=on&page=2"
    # Refused (no consult ticked): back the same way.
    response = login(administrator).post(reverse(BULK), {"to": str(stand_in.uuid), "query": "kind=CT&x=1"})
    assert response["Location"] == f"{reverse(PAGE)}?kind=CT"


def test_a_waiting_consult_can_be_given_too(township, stand_in, administrator):
    waiting = make_consult(township, kind=ExamKind.DR)
    login(administrator).post(reverse(BULK), {"consults": [str(waiting.uuid)], "to": str(stand_in.uuid)})
    waiting.refresh_from_db()
    assert (waiting.radiologist, waiting.status) == (stand_in, Consult.Status.ASSIGNED)


def assert_unchanged(consults: list[Consult], reader: User) -> None:
    for consult in consults:
        before = consult.status
        consult.refresh_from_db()
        assert (consult.radiologist, consult.status) == (reader, before)
    assert not AuditEvent.objects.filter(action="consults.consult.reassigned").exists()


def test_a_signed_consult_among_them_moves_none(township, away, stand_in, administrator):
    open_ones = [held(township, away), held(township, away)]
    signed = held(township, away)
    Consult.objects.filter(pk=signed.pk).update(status=Consult.Status.SIGNED, signed_at=timezone.now())
    signed.refresh_from_db()
    response = login(administrator).post(
        reverse(BULK),
        {"consults": [str(c.uuid) for c in [*open_ones, signed]], "to": str(stand_in.uuid)},
        follow=True,
    )
    text = response.content.decode()
    assert "未转派任何会诊" in text and "已初诊或签发，不能重新分配" in text and "漩涡" in text
    assert_unchanged([*open_ones, signed], away)


def test_a_reader_without_the_reading_permission_takes_none(township, away, administrator, county):
    dr_only = make_user(User.Role.RADIOLOGIST, county, username="dr_sun", display_name="孙医生", reads_ct=False)
    make_shift(dr_only, timezone.now() - timedelta(hours=1))
    consults = [held(township, away, kind=ExamKind.DR), held(township, away, kind=ExamKind.CT)]
    response = login(administrator).post(
        reverse(BULK), {"consults": [str(c.uuid) for c in consults], "to": str(dr_only.uuid)}, follow=True
    )
    assert "孙医生 没有阅读CT的资格" in response.content.decode()
    assert_unchanged(consults, away)


def test_a_reader_off_duty_takes_none(township, away, administrator, county):
    off = make_user(User.Role.RADIOLOGIST, county, username="dr_zhou", display_name="周医生", reads_ct=True)
    consults = [held(township, away)]
    response = login(administrator).post(
        reverse(BULK), {"consults": [str(consults[0].uuid)], "to": str(off.uuid)}, follow=True
    )
    assert "周医生 现在不在班" in response.content.decode()
    assert_unchanged(consults, away)


def test_an_empty_selection_is_refused(stand_in, administrator):
    response = login(administrator).post(reverse(BULK), {"to": str(stand_in.uuid)}, follow=True)
    assert "请至少选择一个会诊。" in response.content.decode()
    assert not AuditEvent.objects.filter(action="consults.consult.reassigned").exists()


def test_no_reader_or_an_unknown_consult_is_refused(township, away, stand_in, administrator):
    consult = held(township, away)
    client = login(administrator)
    text = client.post(reverse(BULK), {"consults": [str(consult.uuid)]}, follow=True).content.decode()
    assert "请选择接收会诊的医师。" in text
    unknown = "00000000-0000-4000-8000-000000000000"
    text = client.post(
        reverse(BULK), {"consults": [str(consult.uuid), unknown], "to": str(stand_in.uuid)}, follow=True
    ).content.decode()
    assert "所选会诊中有已不存在的会诊。" in text
    assert_unchanged([consult], away)


def test_the_workflow_refuses_the_lot_for_one_bad_consult(township, away, stand_in, administrator):
    good = held(township, away)
    cancelled = held(township, away)
    Consult.objects.filter(pk=cancelled.pk).update(status=Consult.Status.CANCELLED)
    with pytest.raises(workflow.WorkflowError):
        workflow.reassign_consults([good, cancelled], by=administrator, to=stand_in)
    assert_unchanged([good], away)


def test_a_technologist_may_not_reassign_through_the_workflow(township, away, stand_in, technologist):
    consult = held(township, away)
    with pytest.raises(workflow.NotAllowed):
        workflow.reassign_consults([consult], by=technologist, to=stand_in)
    assert_unchanged([consult], away)


def test_consults_the_reader_already_holds_stay_as_they_are(township, away, stand_in, administrator):
    theirs = held(township, stand_in, opened=True)
    other = held(township, away)
    result = workflow.reassign_consults([theirs, other], by=administrator, to=stand_in)
    assert [c.pk for c in result.moved] == [other.pk]
    assert [c.pk for c in result.already_held] == [theirs.pk]
    theirs.refresh_from_db()
    assert theirs.status == Consult.Status.OPENED


def test_readers_holding_as_many_are_listed_by_pinyin(county):
    """赵医生 came before 钱医生 (code points); a Chinese reader looks for 陈, 钱, 赵."""
    for username, name in (("dr_zhao", "赵医生"), ("dr_qian", "钱医生"), ("dr_chen", "陈医生")):
        make_user(User.Role.RADIOLOGIST, county, username=username, display_name=name)
    readers = [str(h.radiologist) for h in workflow.holders() if h.radiologist is not None]
    assert readers == ["陈医生", "钱医生", "赵医生"]
