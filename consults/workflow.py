"""The reading workflow: who reads a consult, the time it may take, the report's signatures,
addenda and critical findings (危急值), and what happens when a step is late.

Every function takes the acting user and, where time matters, a `now` (the periodic check
and the tests pass one; views leave it to the clock). Each step runs in a transaction on the
locked consult row, writes its time stamp on the Consult and an audit entry with a dotted
code, and leaves mail and send-back to Celery tasks queued on commit."""

from __future__ import annotations

import logging
import smtplib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import Count, Q, QuerySet
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from consults.models import (
    Addendum,
    Assignment,
    Consult,
    CriticalFinding,
    Escalation,
    Priority,
    Report,
    ReportTemplate,
)
from facilities.models import ExamKind, RosterShift, User
from facilities.services import audit

logger = logging.getLogger("consults")

# Held by a reader and not yet signed by them: the lock applies.
HELD_STATUSES = (Consult.Status.ASSIGNED, Consult.Status.OPENED)
# Waiting for a report: the time limit runs.
OPEN_STATUSES = (Consult.Status.ARRIVED, *HELD_STATUSES, Consult.Status.PRELIMINARY)

DEFAULT_TIME_LIMITS: dict[str, dict[str, int]] = {
    Priority.EMERGENCY: {"DR": 30, "CT": 60, "CT_HEAD": 30},
    Priority.URGENT: {"DR": 60, "CT": 120, "CT_HEAD": 60},
    Priority.ROUTINE: {"DR": 120, "CT": 240, "CT_HEAD": 240},
}
# Words that mark a head exam in the technologist's body parts or the series' BodyPartExamined.
_HEAD_WORDS = ("头", "颅", "脑", "HEAD", "BRAIN", "SKULL")


class WorkflowError(Exception):
    """A step that the consult's present state does not allow."""


class NotAllowed(WorkflowError):
    """The user may not take this step: another reader's lock, not a senior, another township."""


class RequestLocked(WorkflowError):
    """The request can no longer be corrected: a reader has opened the consult."""


# --- Time limits ---------------------------------------------------------------------------


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


def due_at_for(consult: Consult) -> datetime:
    return consult.arrived_at + time_limit(consult)


def near_limit_at(consult: Consult) -> datetime:
    fraction = getattr(settings, "CONSULT_NEAR_LIMIT_FRACTION", 0.8)
    return consult.arrived_at + time_limit(consult) * fraction


# --- The roster ----------------------------------------------------------------------------


def _now(now: datetime | None) -> datetime:
    return now if now is not None else timezone.now()


def _not_before(moment: datetime, earliest: datetime | None) -> datetime:
    # The model's constraints require each step after arrival; a `now` from a test or a
    # skewed clock must not break them.
    return max(moment, earliest) if earliest is not None else moment


def on_duty(now: datetime, kind: str | None = None) -> QuerySet[User]:
    """Active radiologists whose shift covers `now`, qualified for `kind`, least loaded first.

    The load is the number of consults each holds and has not yet signed."""
    shifts = RosterShift.objects.filter(starts_at__lte=now, ends_at__gt=now)
    readers = User.objects.filter(role=User.Role.RADIOLOGIST, is_active=True, pk__in=shifts.values("radiologist"))
    if kind == ExamKind.CT:
        readers = readers.filter(reads_ct=True)
    elif kind == ExamKind.DR:
        readers = readers.filter(reads_dr=True)
    return readers.annotate(load=Count("consults", filter=Q(consults__status__in=HELD_STATUSES))).order_by("load", "id")


def duty_lead(now: datetime) -> User | None:
    """The duty lead on shift now; failing one, the least loaded senior on duty."""
    shift = (
        RosterShift.objects.select_related("radiologist")
        .filter(starts_at__lte=now, ends_at__gt=now, is_lead=True, radiologist__is_active=True)
        .order_by("starts_at", "id")
        .first()
    )
    if shift is not None:
        return shift.radiologist
    return on_duty(now).filter(is_senior=True).first()


def is_on_duty(user: User, now: datetime) -> bool:
    return RosterShift.objects.filter(radiologist=user, starts_at__lte=now, ends_at__gt=now).exists()


def may_lead(user: User, now: datetime | None = None) -> bool:
    """Who may reassign another reader's consult: the duty lead on shift, or a senior."""
    if not (user.is_authenticated and user.is_active and user.is_radiologist):
        return False
    now = _now(now)
    return (
        user.is_senior
        or RosterShift.objects.filter(radiologist=user, is_lead=True, starts_at__lte=now, ends_at__gt=now).exists()
    )


def _require_reader(user: User, consult: Consult) -> None:
    if not (user.is_active and user.can_read(consult.kind)):
        raise NotAllowed(_("您没有阅读此类检查的资格。"))


def _lock(consult: Consult) -> Consult:
    """The consult's row, locked until the transaction ends, so two readers or a reader and
    the periodic check cannot both take the same step."""
    return Consult.objects.select_for_update().get(pk=consult.pk)


def _refresh(target: Consult, source: Consult) -> Consult:
    # Callers keep using the instance they passed in; give it the committed state.
    for f in Consult._meta.concrete_fields:
        setattr(target, f.attname, getattr(source, f.attname))
    return target


def _queue(task_name: str, *args: Any) -> None:
    from consults import tasks

    task = getattr(tasks, task_name)
    transaction.on_commit(lambda: task.delay(*args))


def queue_delivery(delivery_id: int) -> None:
    """Hand an outbox row to a worker on commit. Without a broker a task would run right
    here, in the signing request; the ticker's periodic run sends it instead."""
    if not getattr(settings, "CELERY_TASK_ALWAYS_EAGER", True):
        _queue("deliver_report", delivery_id)


# --- Assignment, claim, release, reassignment ----------------------------------------------


def _give(consult: Consult, reader: User, now: datetime, how: str) -> None:
    consult.radiologist = reader
    consult.assignment = how
    consult.assigned_at = _not_before(now, consult.arrived_at)
    consult.claimed_at = consult.assigned_at if how == Assignment.CLAIMED else None
    consult.opened_at = None
    consult.status = Consult.Status.ASSIGNED
    consult.save(update_fields=["radiologist", "assignment", "assigned_at", "claimed_at", "opened_at", "status"])


def _take_back(consult: Consult) -> None:
    consult.radiologist = None
    consult.assignment = ""
    consult.assigned_at = None
    consult.claimed_at = None
    consult.opened_at = None
    consult.status = Consult.Status.ARRIVED
    consult.save(update_fields=["radiologist", "assignment", "assigned_at", "claimed_at", "opened_at", "status"])


def assign_consult(consult: Consult, now: datetime | None = None) -> User | None:
    """Give an arrived consult to the least loaded qualified radiologist on duty.

    Returns the reader, or None when nobody fits: the consult then waits in the shared
    worklist, and the periodic check tries again."""
    now = _now(now)
    with transaction.atomic():
        locked = _lock(consult)
        if locked.status != Consult.Status.ARRIVED or locked.radiologist_id is not None:
            _refresh(consult, locked)
            return locked.radiologist
        reader = on_duty(now, locked.kind).first()
        if reader is None:
            return None
        _give(locked, reader, now, Assignment.ROSTER)
        audit("consults.consult.assigned", obj=locked, radiologist=reader.get_username(), method="roster")
    logger.info("consult %s assigned to %s", locked.uuid, reader.get_username())
    _refresh(consult, locked)
    return reader


def claim_consult(consult: Consult, user: User, now: datetime | None = None) -> Consult:
    """Take a consult from the shared worklist; it is then locked to `user`."""
    now = _now(now)
    _require_reader(user, consult)
    with transaction.atomic():
        locked = _lock(consult)
        if locked.radiologist_id == user.pk and locked.status in HELD_STATUSES:
            return _refresh(consult, locked)
        if locked.radiologist_id is not None and locked.status in HELD_STATUSES:
            raise NotAllowed(_("该会诊已由其他医师领取。"))
        if locked.status != Consult.Status.ARRIVED:
            raise WorkflowError(_("该会诊已不在待分配状态。"))
        _give(locked, user, now, Assignment.CLAIMED)
        audit("consults.consult.claimed", actor=user, obj=locked)
    return _refresh(consult, locked)


def release_consult(consult: Consult, user: User, now: datetime | None = None) -> Consult:
    """The reader gives a held consult back to the shared worklist. A draft report stays."""
    with transaction.atomic():
        locked = _lock(consult)
        if locked.status not in HELD_STATUSES:
            raise WorkflowError(_("只有已分配或阅片中的会诊可以释放。"))
        if locked.radiologist_id != user.pk:
            raise NotAllowed(_("该会诊由其他医师负责。"))
        _take_back(locked)
        audit("consults.consult.released", actor=user, obj=locked)
    return _refresh(consult, locked)


def reassign_consult(
    consult: Consult,
    *,
    by: User | None = None,
    to: User | None = None,
    now: datetime | None = None,
    reason: str = "",
) -> User | None:
    """Move a consult to `to`, or to the least loaded other qualified reader on duty; with
    nobody to take it, back to the shared worklist. `by` is None for the periodic check.

    Returns the new reader or None."""
    now = _now(now)
    if by is not None and not may_lead(by, now):
        raise NotAllowed(_("只有值班组长或上级医师可以重新分配会诊。"))
    with transaction.atomic():
        locked = _lock(consult)
        if locked.status not in (Consult.Status.ARRIVED, *HELD_STATUSES):
            raise WorkflowError(_("该会诊已初诊或签发，不能重新分配。"))
        previous = locked.radiologist
        if to is not None:
            _require_reader(to, locked)
            reader: User | None = to
        else:
            candidates = on_duty(now, locked.kind)
            if previous is not None:
                candidates = candidates.exclude(pk=previous.pk)
            reader = candidates.first()
        if reader is not None and reader == previous:
            return _refresh(consult, locked).radiologist
        if reader is None:
            if previous is None:
                return None
            _take_back(locked)
        else:
            _give(locked, reader, now, Assignment.REASSIGNED)
        audit(
            "consults.consult.reassigned",
            actor=by,
            obj=locked,
            previous=previous.get_username() if previous else "",
            radiologist=reader.get_username() if reader else "",
            reason=reason,
        )
    _refresh(consult, locked)
    return reader


def open_consult(consult: Consult, user: User, now: datetime | None = None) -> Consult:
    """The holder starts reading: once, when they first open the reporting page."""
    if consult.status != Consult.Status.ASSIGNED or consult.radiologist_id != user.pk:
        return consult
    now = _now(now)
    with transaction.atomic():
        locked = _lock(consult)
        if locked.status != Consult.Status.ASSIGNED or locked.radiologist_id != user.pk:
            return _refresh(consult, locked)
        locked.status = Consult.Status.OPENED
        locked.opened_at = _not_before(now, locked.arrived_at)
        locked.save(update_fields=["status", "opened_at"])
        audit("consults.consult.opened", actor=user, obj=locked)
    return _refresh(consult, locked)


# --- The technologist's request --------------------------------------------------------------

REQUEST_FIELDS = ("clinical_history", "body_parts", "body_part_names", "priority", "question")


def can_correct_request(user: User, consult: Consult) -> bool:
    """The township's technologist may correct the request until a reader opens it."""
    return bool(
        user.is_active
        and user.is_technologist
        and user.facility_id == consult.facility_id
        and consult.status in (Consult.Status.ARRIVED, Consult.Status.ASSIGNED)
        and consult.opened_at is None
    )


def correct_request(consult: Consult, user: User, **changes: Any) -> Consult:
    """A technologist of the township corrects the request until a reader opens it."""
    if not (user.is_active and user.is_technologist and user.facility_id == consult.facility_id):
        raise NotAllowed(_("只有申请机构的技师可以修改会诊申请。"))
    unknown = set(changes) - set(REQUEST_FIELDS)
    if unknown:
        raise ValueError(f"not request fields: {sorted(unknown)}")
    if "priority" in changes and changes["priority"] not in Priority.values:
        raise WorkflowError(_("无效的优先级。"))
    if "body_parts" in changes and int(changes["body_parts"]) < 1:
        raise WorkflowError(_("部位数至少为 1。"))
    with transaction.atomic():
        locked = _lock(consult)
        if locked.status not in (Consult.Status.ARRIVED, Consult.Status.ASSIGNED) or locked.opened_at:
            raise RequestLocked(_("医师已开始阅片，申请不能再修改。"))
        before = {name: getattr(locked, name) for name in changes}
        for name, value in changes.items():
            setattr(locked, name, value)
        locked.due_at = due_at_for(locked)
        locked.save(update_fields=[*changes, "due_at"])
        audit(
            "consults.consult.corrected",
            actor=user,
            obj=locked,
            changes={name: [str(before[name]), str(value)] for name, value in changes.items()},
        )
    return _refresh(consult, locked)


# --- The report ----------------------------------------------------------------------------


def report_for(consult: Consult) -> Report | None:
    return Report.objects.filter(consult=consult).first()


def _is_reviewer(user: User, consult: Consult, report: Report | None) -> bool:
    """A senior other than the preliminary reader may edit and sign a preliminary report."""
    return (
        consult.status == Consult.Status.PRELIMINARY
        and user.is_active
        and user.is_senior
        and user.can_read(consult.kind)
        and (report is None or report.preliminary_by_id != user.pk)
    )


def can_edit(user: User, consult: Consult) -> bool:
    if consult.status in HELD_STATUSES:
        return consult.radiologist_id == user.pk
    if consult.status == Consult.Status.PRELIMINARY:
        return _is_reviewer(user, consult, report_for(consult))
    return False


def _write(locked: Consult, user: User, findings: str | None, impression: str | None, *, as_reader: bool) -> Report:
    report = Report.objects.select_for_update().filter(consult=locked).first()
    if report is None:
        report = Report(consult=locked, author=user)
    if findings is not None:
        report.findings = findings.strip()
    if impression is not None:
        report.impression = impression.strip()
    if as_reader:
        # After a release or reassignment the report is the new reader's.
        report.author = user
    report.save()
    return report


def _check_editable(locked: Consult, user: User) -> bool:
    """Whether `user` edits as the holder (True) or as the reviewer (False); raises otherwise."""
    if locked.status in HELD_STATUSES:
        if locked.radiologist_id != user.pk:
            raise NotAllowed(_("该会诊由其他医师负责。"))
        return True
    if locked.status == Consult.Status.PRELIMINARY:
        if not _is_reviewer(user, locked, report_for(locked)):
            raise NotAllowed(_("初诊报告须由另一位上级医师审核。"))
        return False
    if locked.status in (Consult.Status.SIGNED, Consult.Status.DELIVERED):
        raise WorkflowError(_("报告已签发，不能修改；请添加补充报告。"))
    raise WorkflowError(_("请先领取该会诊。"))


def save_draft(consult: Consult, user: User, findings: str, impression: str, now: datetime | None = None) -> Report:
    now = _now(now)
    with transaction.atomic():
        locked = _lock(consult)
        as_reader = _check_editable(locked, user)
        if locked.status == Consult.Status.ASSIGNED:
            locked.status = Consult.Status.OPENED
            locked.opened_at = _not_before(now, locked.arrived_at)
            locked.save(update_fields=["status", "opened_at"])
            audit("consults.consult.opened", actor=user, obj=locked)
        report = _write(locked, user, findings, impression, as_reader=as_reader)
        audit("consults.report.saved", actor=user, obj=locked)
    _refresh(consult, locked)
    return report


def _require_text(report: Report) -> None:
    if not report.impression.strip():
        raise WorkflowError(_("诊断意见不能为空。"))


def sign_preliminary(
    consult: Consult,
    user: User,
    findings: str | None = None,
    impression: str | None = None,
    now: datetime | None = None,
) -> Report:
    """初诊: the reader's signature where the township's reports need a senior's review."""
    now = _now(now)
    with transaction.atomic():
        locked = _lock(consult)
        if not locked.facility.requires_second_signature:
            raise WorkflowError(_("本机构的报告无需审核，请直接签发。"))
        if locked.status not in HELD_STATUSES:
            raise WorkflowError(_("该会诊当前不能初诊签名。"))
        if locked.radiologist_id != user.pk:
            raise NotAllowed(_("该会诊由其他医师负责。"))
        report = _write(locked, user, findings, impression, as_reader=True)
        _require_text(report)
        report.preliminary_by = user
        report.save(update_fields=["preliminary_by", "updated_at"])
        locked.status = Consult.Status.PRELIMINARY
        locked.opened_at = locked.opened_at or _not_before(now, locked.arrived_at)
        locked.preliminary_at = _not_before(now, locked.opened_at)
        locked.save(update_fields=["status", "opened_at", "preliminary_at"])
        audit("consults.report.preliminary", actor=user, obj=locked)
    _refresh(consult, locked)
    return report


def sign_final(
    consult: Consult,
    user: User,
    findings: str | None = None,
    impression: str | None = None,
    now: datetime | None = None,
) -> Report:
    """The final signature (签发; 审核 after a preliminary). The report is then immutable."""
    now = _now(now)
    with transaction.atomic():
        locked = _lock(consult)
        if locked.facility.requires_second_signature:
            if locked.status in HELD_STATUSES:
                raise WorkflowError(_("本机构的报告须先初诊，再由上级医师审核签发。"))
            if locked.status != Consult.Status.PRELIMINARY:
                raise WorkflowError(_("该会诊当前不能签发。"))
            report = report_for(locked)
            if report is not None and report.preliminary_by_id == user.pk:
                raise NotAllowed(_("初诊医师不能审核自己的报告。"))
            if not _is_reviewer(user, locked, report):
                raise NotAllowed(_("只有上级医师可以审核签发。"))
            report = _write(locked, user, findings, impression, as_reader=False)
        else:
            if locked.status not in HELD_STATUSES:
                raise WorkflowError(_("该会诊当前不能签发。"))
            if locked.radiologist_id != user.pk:
                raise NotAllowed(_("该会诊由其他医师负责。"))
            report = _write(locked, user, findings, impression, as_reader=True)
        _require_text(report)
        signed_at = _not_before(now, locked.preliminary_at or locked.opened_at or locked.arrived_at)
        report.signed_by = user
        report.signed_at = signed_at
        report.save(update_fields=["signed_by", "signed_at", "updated_at"])
        locked.opened_at = locked.opened_at or _not_before(now, locked.arrived_at)
        locked.status = Consult.Status.SIGNED
        locked.signed_at = signed_at
        locked.save(update_fields=["status", "opened_at", "signed_at"])
        audit(
            "consults.report.signed",
            actor=user,
            obj=locked,
            preliminary_by=report.preliminary_by.get_username() if report.preliminary_by else "",
        )
        # The send-back to the township's archive: a row in the outbox now, the C-STORE
        # later, so an archive that is down never holds up the signature.
        from consults.delivery import write_outbox  # delivery imports this module

        outbox = write_outbox(locked, now)
        if outbox is not None:
            queue_delivery(outbox.pk)
    _refresh(consult, locked)
    return report


def add_addendum(consult: Consult, user: User, text: str) -> Addendum:
    """A later change to a signed report: appended with its author and time, never edited in."""
    text = text.strip()
    if not text:
        raise WorkflowError(_("补充内容不能为空。"))
    _require_reader(user, consult)
    with transaction.atomic():
        locked = _lock(consult)
        report = report_for(locked)
        if report is None or not report.is_signed:
            raise WorkflowError(_("报告签发后才能添加补充报告。"))
        addendum = Addendum.objects.create(report=report, author=user, text=text)
        audit("consults.report.addendum", actor=user, obj=locked, addendum=addendum.pk)
    return addendum


def mark_delivered(
    consult: Consult, *, user: User | None = None, channel: str = "web", now: datetime | None = None
) -> bool:
    """The signed report has reached the township: first opened there, or sent to its archive."""
    if consult.delivered_at is not None or consult.signed_at is None:
        return False
    now = _now(now)
    with transaction.atomic():
        locked = _lock(consult)
        if locked.delivered_at is not None or locked.signed_at is None:
            _refresh(consult, locked)
            return False
        locked.delivered_at = _not_before(now, locked.signed_at)
        locked.status = Consult.Status.DELIVERED
        locked.save(update_fields=["delivered_at", "status"])
        audit("consults.report.delivered", actor=user, obj=locked, channel=channel)
    _refresh(consult, locked)
    return True


# --- Templates -----------------------------------------------------------------------------


def templates_for(consult: Consult) -> QuerySet[ReportTemplate]:
    return ReportTemplate.objects.filter(kind=consult.kind, is_active=True)


def add_template(user: User, *, kind: str, body_part: str, name: str, findings: str, impression: str) -> ReportTemplate:
    if not (user.is_active and user.is_radiologist):
        raise NotAllowed(_("只有诊断医师可以添加报告模板。"))
    if kind not in ExamKind.values:
        raise WorkflowError(_("无效的检查类型。"))
    if not (name.strip() and body_part.strip() and impression.strip()):
        raise WorkflowError(_("请填写名称、部位和诊断意见。"))
    template = ReportTemplate.objects.create(
        kind=kind,
        body_part=body_part.strip(),
        name=name.strip(),
        findings=findings.strip(),
        impression=impression.strip(),
        author=user,
    )
    audit("consults.template.created", actor=user, obj=template, name=template.name)
    return template


# --- Critical findings (危急值) -------------------------------------------------------------


def flag_critical(consult: Consult, user: User, description: str, now: datetime | None = None) -> CriticalFinding:
    """The reader flags a critical finding; the township sees it at once on its pages, and by
    e-mail where the facility has an alert address."""
    now = _now(now)
    description = description.strip()
    if not description:
        raise WorkflowError(_("请填写危急值内容。"))
    _require_reader(user, consult)
    with transaction.atomic():
        locked = _lock(consult)
        if locked.status == Consult.Status.CANCELLED:
            raise WorkflowError(_("该会诊已取消。"))
        if locked.status in HELD_STATUSES and locked.radiologist_id != user.pk:
            raise NotAllowed(_("该会诊由其他医师负责。"))
        finding = CriticalFinding.objects.create(
            consult=locked, description=description, flagged_by=user, flagged_at=now
        )
        audit("consults.critical.flagged", actor=user, obj=locked, finding=str(finding.uuid))
        if locked.facility.alert_email:
            _queue("send_critical_alert", finding.pk)
    return finding


def open_critical_findings(facility_id: int) -> QuerySet[CriticalFinding]:
    """Alerts a township has not yet acknowledged, oldest first."""
    return (
        CriticalFinding.objects.select_related("consult", "flagged_by", "consult__study__patient")
        .filter(consult__facility_id=facility_id, acknowledged_at__isnull=True)
        .order_by("flagged_at", "id")
    )


def acknowledge_critical(finding: CriticalFinding, user: User, now: datetime | None = None) -> CriticalFinding:
    """A township user confirms the alert reached them; the time is what the escalation watches."""
    now = _now(now)
    consult = finding.consult
    if not (user.is_active and user.facility_id == consult.facility_id and not user.is_radiologist):
        raise NotAllowed(_("只有申请机构的人员可以确认危急值。"))
    with transaction.atomic():
        locked = _lock(consult)
        finding = CriticalFinding.objects.select_for_update().get(pk=finding.pk)
        if finding.acknowledged_at is not None:
            return finding
        finding.acknowledged_by = user
        finding.acknowledged_at = _not_before(now, finding.flagged_at)
        finding.save(update_fields=["acknowledged_by", "acknowledged_at"])
        if locked.acknowledged_at is None:
            locked.acknowledged_at = finding.acknowledged_at
            locked.save(update_fields=["acknowledged_at"])
        audit(
            "consults.critical.acknowledged",
            actor=user,
            obj=locked,
            finding=str(finding.uuid),
            minutes=round((finding.acknowledged_at - finding.flagged_at).total_seconds() / 60, 1),
        )
    return finding


def send_critical_alert(finding: CriticalFinding) -> bool:
    """E-mail the township's alert address. Returns whether a message went out."""
    facility = finding.consult.facility
    if not facility.alert_email:
        return False
    with translation.override(settings.LANGUAGE_CODE):
        subject = _("【危急值】%(facility)s 的会诊") % {"facility": facility.short_name}
        body = _(
            "%(facility)s：\n\n诊断医师 %(reader)s 于 %(at)s 报告危急值：\n%(text)s\n\n"
            "请立即处理，并在平台上确认：%(url)s\n"
        ) % {
            "facility": facility.name,
            "reader": finding.flagged_by,
            "at": timezone.localtime(finding.flagged_at).strftime("%Y-%m-%d %H:%M"),
            "text": finding.description,
            "url": f"{settings.SITE_URL}/reading/{finding.consult.uuid}/",
        }
    error = _mail(subject, body, facility.alert_email)
    if error:
        audit(
            "consults.critical.email_failed",
            obj=finding.consult,
            finding=str(finding.uuid),
            to=facility.alert_email,
            error=error,
        )
        return False
    CriticalFinding.objects.filter(pk=finding.pk, emailed_at__isnull=True).update(emailed_at=timezone.now())
    audit("consults.critical.emailed", obj=finding.consult, finding=str(finding.uuid), to=facility.alert_email)
    return True


# --- E-mail ----------------------------------------------------------------------------------


def _mail(subject: str, body: str, to: str) -> str:
    """Send one message through Django's configured backend (EMAIL_*); an empty string when
    the server took it, else why not. A mail server that is down must not stop the check
    that escalates: the escalation is recorded and shown on the readers' alert page anyway."""
    try:
        send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, [to])
    except (smtplib.SMTPException, OSError) as error:
        logger.warning("mail to %s failed: %s", to, error)
        return f"{type(error).__name__}: {error}"[:200]
    return ""


def _queue_escalation_email(escalation: Escalation) -> None:
    if escalation.to_user is not None and escalation.to_user.email:
        _queue("send_escalation_email", escalation.pk)


def _escalation_message(escalation: Escalation) -> tuple[str, str]:
    consult = escalation.consult
    recipient = escalation.to_user
    facts = {
        "name": recipient,
        "facility": consult.facility.name,
        "short": consult.facility.short_name,
        "priority": consult.get_priority_display(),
        "kind": consult.get_kind_display(),
        "arrived": timezone.localtime(consult.arrived_at).strftime("%Y-%m-%d %H:%M"),
        "due": timezone.localtime(consult.due_at or due_at_for(consult)).strftime("%Y-%m-%d %H:%M"),
        "previous": escalation.from_radiologist or _("无"),
        "holder": consult.radiologist or _("无人领取"),
        "url": f"{settings.SITE_URL}/reading/{consult.uuid}/",
    }
    if escalation.reason == Escalation.Reason.CRITICAL_UNACKNOWLEDGED and escalation.critical_finding is not None:
        finding = escalation.critical_finding
        subject = _("【危急值未确认】%(facility)s") % {"facility": consult.facility.short_name}
        body = _("%(facility)s 尚未确认 %(at)s 报告的危急值：\n%(text)s\n请电话联系该院。\n%(url)s\n") % {
            "facility": consult.facility.name,
            "at": timezone.localtime(finding.flagged_at).strftime("%Y-%m-%d %H:%M"),
            "text": finding.description,
            "url": facts["url"],
        }
    elif escalation.reason == Escalation.Reason.OFF_DUTY:
        subject = _("【交班转派】%(short)s %(priority)s %(kind)s 会诊") % facts
        body = (
            _(
                "%(name)s：\n\n原诊断医师 %(previous)s 已下班，%(facility)s 的%(priority)s %(kind)s 会诊"
                "（到达 %(arrived)s，时限 %(due)s）现转给您阅片：\n%(url)s\n"
            )
            % facts
        )
    elif escalation.reassigned:
        subject = _("【超时转派】%(short)s %(priority)s %(kind)s 会诊") % facts
        body = (
            _(
                "%(name)s：\n\n%(facility)s 的%(priority)s %(kind)s 会诊（到达 %(arrived)s，时限 %(due)s）"
                "已超过诊断时限，原诊断医师 %(previous)s 尚未阅片，现转给您：\n%(url)s\n"
            )
            % facts
        )
    else:
        subject = _("【会诊超时】%(short)s %(priority)s %(kind)s 会诊") % facts
        body = (
            _(
                "%(name)s：\n\n%(facility)s 的%(priority)s %(kind)s 会诊（到达 %(arrived)s，时限 %(due)s）"
                "已超过诊断时限，目前诊断医师：%(holder)s，没有其他在班医师可以接手。请安排处理：\n%(url)s\n"
            )
            % facts
        )
    return subject, body


def send_escalation_email(escalation: Escalation) -> bool:
    """E-mail the person an escalation went to (the new reader, or the duty lead), once.
    Returns whether a message went out; a failure is logged and audited."""
    recipient = escalation.to_user
    if recipient is None or not recipient.email or escalation.emailed_at is not None:
        return False
    with translation.override(settings.LANGUAGE_CODE):
        subject, body = _escalation_message(escalation)
    error = _mail(subject, body, recipient.email)
    if error:
        audit(
            "consults.escalation.email_failed",
            obj=escalation.consult,
            reason=escalation.reason,
            to=recipient.email,
            error=error,
        )
        return False
    Escalation.objects.filter(pk=escalation.pk, emailed_at__isnull=True).update(emailed_at=timezone.now())
    audit("consults.escalation.emailed", obj=escalation.consult, reason=escalation.reason, to=recipient.email)
    return True


# --- The periodic check --------------------------------------------------------------------


@dataclass
class CheckResult:
    assigned: list[int] = field(default_factory=list)
    reassigned_off_duty: list[int] = field(default_factory=list)
    flagged: list[int] = field(default_factory=list)
    escalated: list[int] = field(default_factory=list)
    critical_escalated: list[int] = field(default_factory=list)


def _priority_order(consults: Iterable[Consult]) -> list[Consult]:
    rank: dict[str, int] = {Priority.EMERGENCY: 0, Priority.URGENT: 1, Priority.ROUTINE: 2}
    return sorted(consults, key=lambda c: (rank.get(c.priority, 3), c.arrived_at, c.pk))


def _escalate_late(consult: Consult, now: datetime) -> Escalation:
    """Past its limit: an unopened consult goes to another reader on duty; one being read,
    or one nobody else can take, goes to the duty lead."""
    previous = consult.radiologist
    reader: User | None = None
    if consult.status == Consult.Status.ARRIVED:
        reader = assign_consult(consult, now)
    elif consult.status == Consult.Status.ASSIGNED:
        others = on_duty(now, consult.kind)
        if previous is not None:
            others = others.exclude(pk=previous.pk)
        if others.exists():
            reader = reassign_consult(consult, now=now, reason="time_limit")
    with transaction.atomic():
        locked = _lock(consult)
        lead = None if reader is not None else duty_lead(now)
        target = reader or lead
        escalation = Escalation.objects.create(
            consult=locked,
            reason=Escalation.Reason.TIME_LIMIT,
            at=now,
            from_radiologist=previous,
            to_user=target,
            reassigned=reader is not None,
        )
        locked.escalated_at = now
        locked.flagged_at = locked.flagged_at or now
        locked.save(update_fields=["escalated_at", "flagged_at"])
        _queue_escalation_email(escalation)
        audit(
            "consults.consult.escalated",
            obj=locked,
            reason=escalation.reason,
            to=target.get_username() if target is not None else "",
            reassigned=reader is not None,
        )
    _refresh(consult, locked)
    return escalation


def _off_duty_holders(now: datetime) -> QuerySet[Consult]:
    """Held consults whose reader's shift has ended since they got it and who has no shift now."""
    current = RosterShift.objects.filter(starts_at__lte=now, ends_at__gt=now).values("radiologist")
    consults = Consult.objects.filter(status__in=HELD_STATUSES, radiologist__isnull=False).exclude(
        radiologist__in=current
    )
    ended = [
        c.pk
        for c in consults.select_related("radiologist")
        if RosterShift.objects.filter(
            radiologist=c.radiologist, ends_at__gt=c.assigned_at or c.arrived_at, ends_at__lte=now
        ).exists()
    ]
    return Consult.objects.filter(pk__in=ended).select_related("radiologist")


def check_consult_deadlines(now: datetime | None = None) -> CheckResult:
    """The per-minute check: assign waiting consults, hand on those of readers gone off duty,
    flag consults near their limit, escalate those past it, and escalate critical findings
    the township has not acknowledged in time."""
    now = _now(now)
    result = CheckResult()

    if getattr(settings, "CONSULT_AUTO_ASSIGN", True):
        waiting = Consult.objects.filter(status=Consult.Status.ARRIVED, radiologist__isnull=True)
        for consult in _priority_order(waiting):
            if assign_consult(consult, now) is not None:
                result.assigned.append(consult.pk)

    for consult in _off_duty_holders(now):
        previous = consult.radiologist
        reader = reassign_consult(consult, now=now, reason="off_duty")
        with transaction.atomic():
            escalation = Escalation.objects.create(
                consult=consult,
                reason=Escalation.Reason.OFF_DUTY,
                at=now,
                from_radiologist=previous,
                to_user=reader,
                reassigned=reader is not None,
            )
            _queue_escalation_email(escalation)
        result.reassigned_off_duty.append(consult.pk)

    open_consults = Consult.objects.filter(status__in=OPEN_STATUSES).select_related("radiologist", "study")
    for consult in _priority_order(open_consults):
        due = due_at_for(consult)
        if consult.due_at != due:
            Consult.objects.filter(pk=consult.pk).update(due_at=due)
            consult.due_at = due
        if now >= due and consult.escalated_at is None:
            _escalate_late(consult, now)
            result.escalated.append(consult.pk)
        elif now >= near_limit_at(consult) and consult.flagged_at is None:
            Consult.objects.filter(pk=consult.pk).update(flagged_at=now)
            audit("consults.consult.flagged", obj=consult, due_at=due.isoformat())
            result.flagged.append(consult.pk)

    ack_minutes = getattr(settings, "CRITICAL_ACK_MINUTES", 15)
    late_alerts = CriticalFinding.objects.select_related("consult__facility").filter(
        acknowledged_at__isnull=True,
        escalated_at__isnull=True,
        flagged_at__lte=now - timedelta(minutes=ack_minutes),
    )
    for finding in late_alerts:
        lead = duty_lead(now)
        with transaction.atomic():
            updated = CriticalFinding.objects.filter(pk=finding.pk, escalated_at__isnull=True).update(escalated_at=now)
            if not updated:
                continue
            escalation = Escalation.objects.create(
                consult=finding.consult,
                critical_finding=finding,
                reason=Escalation.Reason.CRITICAL_UNACKNOWLEDGED,
                at=now,
                from_radiologist=finding.flagged_by,
                to_user=lead,
            )
            audit(
                "consults.critical.escalated",
                obj=finding.consult,
                finding=str(finding.uuid),
                to=lead.get_username() if lead else "",
            )
            _queue_escalation_email(escalation)
        result.critical_escalated.append(finding.pk)
    return result
