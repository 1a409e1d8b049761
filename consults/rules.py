"""What a user may do to a consult: one rule per step, and the errors a refused step raises.

`allowed_steps(user, consult)` is the one answer to "what may this user do here": the
reading page shows exactly those buttons, and each step of consults.workflow (and
consults.delivery's retry) calls `require(step, user, consult)` on the locked row before
it changes anything, so the page and the service cannot disagree.

A refusal is one of two kinds. `NotAllowed` is about who the user is (another reader's
lock, not a senior, another township, the wrong role): the views answer 403, or 404 where
the consult lies outside the user's scope. `WorkflowError` is about the consult's present
state (already signed, not yet claimed): the page shows the message.

This module sits just above the models: it imports nothing else of the app, and
everything else in the app may import it."""

from __future__ import annotations

import enum
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone, translation
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from cloudpacs.orders import body_part_name, named_parts_in
from consults.models import HELD_STATUSES, Consult, Priority, Report, ReportDelivery
from facilities.models import ExamKind, RosterShift, User


class WorkflowError(Exception):
    """A step that the consult's present state does not allow."""


class NotAllowed(WorkflowError):
    """The user may not take this step: another reader's lock, not a senior, another township."""


class RequestLocked(WorkflowError):
    """The request can no longer be corrected: a reader has opened the consult."""


class Step(enum.StrEnum):
    """The steps a user takes on one consult; the values name the reading page's routes."""

    CLAIM = "claim"
    OPEN = "open"
    RELEASE = "release"
    REASSIGN = "reassign"
    EDIT = "edit"  # save a draft of the report
    PRELIMINARY = "preliminary"  # 初诊签名
    SIGN = "sign"  # 签发, or 审核签发 after a preliminary
    ADDENDUM = "addendum"
    FLAG_CRITICAL = "critical"
    ACKNOWLEDGE = "acknowledge"  # a critical finding reached the township
    CORRECT_REQUEST = "request"
    RETRY_DELIVERY = "retry_delivery"
    RECEIVE = "receive"  # 已收到: the township has the signed report


# --- The time limit ------------------------------------------------------------------------
# A consult's limit is fixed when it arrives (or its request is corrected) and stored as
# Consult.due_at; the periodic check escalates by it and the dashboards count a consult
# as within its limit when it was signed by it. Nothing else keeps a table of limits.

DEFAULT_TIME_LIMITS: dict[str, dict[str, int]] = {
    Priority.EMERGENCY: {"DR": 30, "CT": 60, "CT_HEAD": 30},
    Priority.URGENT: {"DR": 60, "CT": 120, "CT_HEAD": 60},
    Priority.ROUTINE: {"DR": 120, "CT": 240, "CT_HEAD": 240},
}
# Words that mark a head exam in the technologist's body parts or the series' BodyPartExamined.
_HEAD_WORDS = ("头", "颅", "脑", "HEAD", "BRAIN", "SKULL")


def is_head_exam(consult: Consult) -> bool:
    names = [consult.body_part_names]
    if consult.study is not None:
        names += [part for part in consult.study.series.values_list("body_part_examined", flat=True) if part]
    text = " ".join(names).upper()
    return any(word in text for word in _HEAD_WORDS)


def time_limit(consult: Consult) -> timedelta:
    """The time from arrival to a signed report allowed for this priority and modality."""
    table = getattr(settings, "CONSULT_TIME_LIMITS", DEFAULT_TIME_LIMITS)
    limits = table.get(consult.priority) or DEFAULT_TIME_LIMITS[consult.priority]
    key = "CT_HEAD" if consult.kind == ExamKind.CT and is_head_exam(consult) else consult.kind
    minutes = limits.get(key, limits.get(consult.kind, DEFAULT_TIME_LIMITS[consult.priority][consult.kind]))
    return timedelta(minutes=minutes)


def time_limit_table() -> dict[str, dict[str, int]]:
    """The configured limits in minutes, {priority: {"DR", "CT", "CT_HEAD"}}, every cell filled."""
    table = getattr(settings, "CONSULT_TIME_LIMITS", DEFAULT_TIME_LIMITS)
    return {
        priority: {**DEFAULT_TIME_LIMITS[priority], **(table.get(priority) or {})} for priority in DEFAULT_TIME_LIMITS
    }


def due_at_for(consult: Consult) -> datetime:
    return consult.arrived_at + time_limit(consult)


# --- The request's own fields ------------------------------------------------------------------


BAD_PRIORITY = gettext_lazy("无效的优先级。")
# The administrators' bulk reassignment with nothing ticked: the form and the workflow say it alike.
NO_CONSULTS_CHOSEN = gettext_lazy("请至少选择一个会诊。")
CONSULTS_GONE = gettext_lazy("所选会诊中有已不存在的会诊。")
TOO_FEW_BODY_PARTS = gettext_lazy("部位数至少为 1。")

# --- The report's and the reading steps' own fields ---------------------------------------------
# Written once: the forms of the reading page show them beside the field, the workflow's
# steps raise them for a caller that bypasses a form.

EMPTY_IMPRESSION = gettext_lazy("诊断意见不能为空。")
EMPTY_ADDENDUM = gettext_lazy("补充内容不能为空。")
EMPTY_CRITICAL = gettext_lazy("请填写危急值内容。")
NOT_ON_DUTY = gettext_lazy("该医师不在班或无相应阅片资格。")


def check_request(*, priority: str | None = None, body_parts: int | None = None) -> None:
    """The one check of a consult request's priority and body-part count, for the form that
    asks and the services that store it alike."""
    if priority is not None and priority not in Priority.values:
        raise WorkflowError(str(BAD_PRIORITY))
    if body_parts is not None and body_parts < 1:
        raise WorkflowError(str(TOO_FEW_BODY_PARTS))


# --- Predicates that do not need a consult -----------------------------------------------------


def _active(user: Any) -> bool:
    return bool(getattr(user, "is_authenticated", False) and user.is_active)


def is_technologist_of(user: Any, facility_id: int | None) -> bool:
    """A technologist of this township: who asks for readings, corrects them, and confirms
    that reports and critical findings reached them."""
    return _active(user) and user.is_technologist and facility_id is not None and user.facility_id == facility_id


def may_acknowledge(user: Any, facility_id: int | None) -> bool:
    """Who confirms a township's critical finding (危急值): its own technologist."""
    return is_technologist_of(user, facility_id)


def is_reader_for(user: Any, kind: str) -> bool:
    """An active radiologist qualified for this kind of exam."""
    return _active(user) and user.is_radiologist and user.can_read(kind)


def may_lead(user: Any, now: datetime | None = None) -> bool:
    """Who may reassign another reader's consult: the duty lead on shift, or a senior."""
    if not (_active(user) and user.is_radiologist):
        return False
    now = now if now is not None else timezone.now()
    return (
        user.is_senior
        or RosterShift.objects.filter(radiologist=user, is_lead=True, starts_at__lte=now, ends_at__gt=now).exists()
    )


def may_oversee(user: Any) -> bool:
    """Who sees every open consult and moves them between readers in bulk (the
    administrators' view of open consults, when a reader is away): an administrator."""
    return _active(user) and user.is_administrator


def may_write_templates(user: Any) -> bool:
    return _active(user) and user.is_radiologist


def may_write_phrases(user: Any) -> bool:
    """A radiologist keeps their own phrase bank; the department's is the administrators' (admin)."""
    return _active(user) and user.is_radiologist


# --- The rules of each step --------------------------------------------------------------------


class _Facts:
    """What the rules ask about one consult beyond its own row, each read at most once."""

    def __init__(self, user: User, consult: Consult, now: datetime | None) -> None:
        self.user = user
        self.consult = consult
        self.now = now
        self._report: Report | bool | None = False
        self._lead: bool | None = None

    @property
    def report(self) -> Report | None:
        if self._report is False:
            self._report = Report.objects.filter(consult_id=self.consult.pk).first()
        return self._report  # type: ignore[return-value]

    @property
    def lead(self) -> bool:
        if self._lead is None:
            self._lead = may_lead(self.user, self.now)
        return self._lead

    @property
    def holder(self) -> bool:
        return self.consult.status in HELD_STATUSES and self.consult.radiologist_id == self.user.pk

    @property
    def held_by_other(self) -> bool:
        return self.consult.status in HELD_STATUSES and self.consult.radiologist_id != self.user.pk


Refusal = WorkflowError | None


def _not_a_reader(f: _Facts) -> Refusal:
    if not is_reader_for(f.user, f.consult.kind):
        return NotAllowed(_("您没有阅读此类检查的资格。"))
    return None


def _claim(f: _Facts) -> Refusal:
    if refused := _not_a_reader(f):
        return refused
    if f.holder:
        return WorkflowError(_("您已领取该会诊。"))
    if f.held_by_other:
        return NotAllowed(_("该会诊已由其他医师领取。"))
    if f.consult.status != Consult.Status.ARRIVED:
        return WorkflowError(_("该会诊已不在待分配状态。"))
    return None


def _open(f: _Facts) -> Refusal:
    if f.held_by_other:
        return NotAllowed(_("该会诊由其他医师负责。"))
    if not f.holder or f.consult.status != Consult.Status.ASSIGNED:
        return WorkflowError(_("只有分配给您、尚未打开的会诊可以开始阅片。"))
    return None


def _release(f: _Facts) -> Refusal:
    if f.consult.status not in HELD_STATUSES:
        return WorkflowError(_("只有已分配或阅片中的会诊可以释放。"))
    if not f.holder:
        return NotAllowed(_("该会诊由其他医师负责。"))
    return None


def _reassignable(consult: Consult) -> Refusal:
    """Whether the consult's state lets it move to another reader, whoever moves it."""
    if consult.status not in (Consult.Status.ARRIVED, *HELD_STATUSES):
        return WorkflowError(_("该会诊已初诊或签发，不能重新分配。"))
    return None


def _reassign(f: _Facts) -> Refusal:
    if not f.lead:
        return NotAllowed(_("只有值班组长或上级医师可以重新分配会诊。"))
    return _reassignable(f.consult)


def _is_reviewer(f: _Facts) -> bool:
    """A senior other than the preliminary reader may edit and sign a preliminary report."""
    report = f.report
    return (
        f.consult.status == Consult.Status.PRELIMINARY
        and is_reader_for(f.user, f.consult.kind)
        and f.user.is_senior
        and (report is None or report.preliminary_by_id != f.user.pk)
    )


def _edit(f: _Facts) -> Refusal:
    status = f.consult.status
    if status in HELD_STATUSES:
        return None if f.holder else NotAllowed(_("该会诊由其他医师负责。"))
    if status == Consult.Status.PRELIMINARY:
        return None if _is_reviewer(f) else NotAllowed(_("初诊报告须由另一位上级医师审核。"))
    if status in (Consult.Status.SIGNED, Consult.Status.DELIVERED):
        return WorkflowError(_("报告已签发，不能修改；请添加补充报告。"))
    if status == Consult.Status.CANCELLED:
        return WorkflowError(_("该会诊已取消。"))
    if not is_reader_for(f.user, f.consult.kind):
        return NotAllowed(_("您没有阅读此类检查的资格。"))
    return WorkflowError(_("请先领取该会诊。"))


def _preliminary(f: _Facts) -> Refusal:
    if f.held_by_other:
        return NotAllowed(_("该会诊由其他医师负责。"))
    if not f.consult.facility.requires_second_signature:
        return WorkflowError(_("本机构的报告无需审核，请直接签发。"))
    if f.consult.status not in HELD_STATUSES:
        return WorkflowError(_("该会诊当前不能初诊签名。"))
    if not f.holder:
        return NotAllowed(_("该会诊由其他医师负责。"))
    return None


def _sign(f: _Facts) -> Refusal:
    status = f.consult.status
    if f.held_by_other:
        return NotAllowed(_("该会诊由其他医师负责。"))
    if f.consult.facility.requires_second_signature:
        if status in HELD_STATUSES:
            return WorkflowError(_("本机构的报告须先初诊，再由上级医师审核签发。"))
        if status != Consult.Status.PRELIMINARY:
            return WorkflowError(_("该会诊当前不能签发。"))
        if f.report is not None and f.report.preliminary_by_id == f.user.pk:
            return NotAllowed(_("初诊医师不能审核自己的报告。"))
        if not _is_reviewer(f):
            return NotAllowed(_("只有上级医师可以审核签发。"))
        return None
    if status not in HELD_STATUSES:
        return WorkflowError(_("该会诊当前不能签发。"))
    return None if f.holder else NotAllowed(_("该会诊由其他医师负责。"))


def _addendum(f: _Facts) -> Refusal:
    if refused := _not_a_reader(f):
        return refused
    if f.consult.signed_at is None:
        return WorkflowError(_("报告签发后才能添加补充报告。"))
    return None


def _flag(f: _Facts) -> Refusal:
    if refused := _not_a_reader(f):
        return refused
    if f.consult.status == Consult.Status.CANCELLED:
        return WorkflowError(_("该会诊已取消。"))
    if f.held_by_other:
        return NotAllowed(_("该会诊由其他医师负责。"))
    return None


def _acknowledge(f: _Facts) -> Refusal:
    if not may_acknowledge(f.user, f.consult.facility_id):
        return NotAllowed(_("只有申请机构的技师可以确认危急值。"))
    return None


def _correct(f: _Facts) -> Refusal:
    if not is_technologist_of(f.user, f.consult.facility_id):
        return NotAllowed(_("只有申请机构的技师可以修改会诊申请。"))
    if f.consult.status not in (Consult.Status.ARRIVED, Consult.Status.ASSIGNED) or f.consult.opened_at:
        return RequestLocked(_("医师已开始阅片，申请不能再修改。"))
    return None


def _retry_delivery(f: _Facts) -> Refusal:
    user = f.user
    if not (is_technologist_of(user, f.consult.facility_id) or (_active(user) and user.is_radiologist)):
        return NotAllowed(_("只有申请机构的技师或诊断医师可以重新回传报告。"))
    if (
        f.consult.signed_at is None
        or not ReportDelivery.objects.filter(consult_id=f.consult.pk, status=ReportDelivery.Status.FAILED).exists()
    ):
        return WorkflowError(_("该报告的回传没有失败，无需重试。"))
    return None


def _receive(f: _Facts) -> Refusal:
    if not is_technologist_of(f.user, f.consult.facility_id):
        return NotAllowed(_("只有申请机构的技师可以确认收到报告。"))
    if f.consult.signed_at is None:
        return WorkflowError(_("报告尚未签发。"))
    if f.consult.delivered_at is not None:
        return WorkflowError(_("报告已送达，无需再次确认。"))
    return None


RULES: dict[Step, Callable[[_Facts], Refusal]] = {
    Step.CLAIM: _claim,
    Step.OPEN: _open,
    Step.RELEASE: _release,
    Step.REASSIGN: _reassign,
    Step.EDIT: _edit,
    Step.PRELIMINARY: _preliminary,
    Step.SIGN: _sign,
    Step.ADDENDUM: _addendum,
    Step.FLAG_CRITICAL: _flag,
    Step.ACKNOWLEDGE: _acknowledge,
    Step.CORRECT_REQUEST: _correct,
    Step.RETRY_DELIVERY: _retry_delivery,
    Step.RECEIVE: _receive,
}
# Steps that only readers take: the rules of the others are not asked for a technologist.
_READER_STEPS = frozenset(RULES) - {Step.ACKNOWLEDGE, Step.CORRECT_REQUEST, Step.RETRY_DELIVERY, Step.RECEIVE}
_TOWNSHIP_STEPS = frozenset({Step.ACKNOWLEDGE, Step.CORRECT_REQUEST, Step.RETRY_DELIVERY, Step.RECEIVE})


def refusal(step: Step, user: User, consult: Consult, now: datetime | None = None) -> WorkflowError | None:
    """Why `user` may not take `step` on `consult` now, or None if they may."""
    if step in _READER_STEPS and not (_active(user) and user.is_radiologist):
        return NotAllowed(_("只有诊断医师可以进行此操作。"))
    return RULES[step](_Facts(user, consult, now))


def allowed_steps(user: Any, consult: Consult, now: datetime | None = None) -> frozenset[Step]:
    """Every step `user` may take on `consult` now: what the page offers and the services accept."""
    if not _active(user):
        return frozenset()
    facts = _Facts(user, consult, now)
    if user.is_radiologist:
        candidates: frozenset[Step] = _READER_STEPS | {Step.RETRY_DELIVERY}
    elif user.is_technologist:
        candidates = _TOWNSHIP_STEPS
    else:
        return frozenset()
    return frozenset(step for step in candidates if RULES[step](facts) is None)


def move_refusal(user: Any, consult: Consult) -> WorkflowError | None:
    """Why `user` may not move `consult` to another reader from the administrators' view of
    open consults (consults.workflow.reassign_consults), or None if they may: an
    administrator, a consult whose state allows a reassignment. Not a step of the reading
    page, which administrators do not open; the state's rule is the reassignment's."""
    if not may_oversee(user):
        return NotAllowed(_("只有管理员可以批量转派会诊。"))
    return _reassignable(consult)


def require(step: Step, user: User, consult: Consult, now: datetime | None = None) -> None:
    """Raise the refusal if `user` may not take `step` on `consult`; services call it on the locked row."""
    refused = refusal(step, user, consult, now)
    if refused is not None:
        raise refused


def body_part_label(consult: Consult) -> str:
    """What the exam is of, for people: the parts named in the request, else the names of
    the series' BodyPartExamined values in the body-part vocabulary (CHEST -> 胸部), a value
    it does not know as written; "" when neither says. In the active language."""
    language = translation.get_language() or "zh-hans"
    if consult.body_part_names:
        return named_parts_in(consult.body_part_names, language)
    study = consult.study
    if study is None:
        return ""
    names: list[str] = []
    for value in study.series.exclude(body_part_examined="").values_list("body_part_examined", flat=True):
        name = body_part_name(value, language)
        if name and name not in names:
            names.append(name)
    return (", " if language.startswith("en") else "、").join(names)
