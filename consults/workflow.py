"""The reading workflow: who reads a consult, the time it may take, the report's signatures,
addenda and critical findings (危急值), and what happens when a step is late.

Every function takes the acting user and, where time matters, a `now` (the periodic check
and the tests pass one; views leave it to the clock). Each step runs in a transaction on the
locked consult row, writes its time stamp on the Consult and an audit entry with a dotted
code, and leaves mail and send-back to Celery tasks queued on commit."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Q, QuerySet
from django.utils import timezone
from django.utils.translation import gettext as _
from pydicom.uid import generate_uid

from cloudpacs.models import Study
from consults import handoff, outbox
from consults.changes import Change, publish
from consults.models import (
    HELD_STATUSES,
    Addendum,
    Assignment,
    Consult,
    CriticalFinding,
    Escalation,
    Notification,
    Report,
    ReportDelivery,
)
from consults.rules import (
    CONSULTS_GONE,
    EMPTY_ADDENDUM,
    EMPTY_CRITICAL,
    EMPTY_IMPRESSION,
    NO_CONSULTS_CHOSEN,
    check_request,
    move_refusal,
    require,
)
from consults.rules import DEFAULT_TIME_LIMITS as DEFAULT_TIME_LIMITS
from consults.rules import NotAllowed as NotAllowed
from consults.rules import RequestLocked as RequestLocked
from consults.rules import Step as Step
from consults.rules import WorkflowError as WorkflowError
from consults.rules import allowed_steps as allowed_steps
from consults.rules import due_at_for as due_at_for
from consults.rules import is_head_exam as is_head_exam
from consults.rules import may_lead as may_lead
from consults.rules import time_limit as time_limit
from consults.verification import record_signature
from facilities.models import ExamKind, RosterShift, User
from facilities.names import pinyin_key
from facilities.services import audit

logger = logging.getLogger("consults")


def near_limit_at(consult: Consult) -> datetime:
    fraction = getattr(settings, "CONSULT_NEAR_LIMIT_FRACTION", 0.8)
    due = consult.due_at or due_at_for(consult)
    return consult.arrived_at + (due - consult.arrived_at) * fraction


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


@dataclass
class Holder:
    """What one reader holds of the open consults (the administrators' view): given to
    them and not yet opened, being read, signed preliminary and waiting for a senior, and
    how many of those are past their time limit. `radiologist` None is the shared
    worklist: arrived consults nobody holds."""

    radiologist: User | None
    on_duty: bool
    assigned: int = 0
    opened: int = 0
    preliminary: int = 0
    waiting: int = 0
    overdue: int = 0

    @property
    def total(self) -> int:
        return self.assigned + self.opened + self.preliminary + self.waiting


def holders(now: datetime | None = None) -> list[Holder]:
    """Who holds what among the open consults, one query: each active radiologist (and any
    inactive one still holding consults: a reader gone away), most consults first, then the
    shared worklist. Overdue is past the consult's stored due_at."""
    now = _now(now)
    counts = (
        Consult.objects.open()
        .values("radiologist_id", "status")
        .annotate(n=Count("id"), late=Count("id", filter=Q(due_at__lt=now)))
        .order_by()
    )
    on_shift = set(
        RosterShift.objects.filter(starts_at__lte=now, ends_at__gt=now).values_list("radiologist_id", flat=True)
    )
    readers = User.objects.filter(
        Q(role=User.Role.RADIOLOGIST, is_active=True) | Q(pk__in={r["radiologist_id"] for r in counts})
    )
    by_reader = {u.pk: Holder(u, u.pk in on_shift) for u in readers}
    shared = Holder(None, False)
    field_of: dict[str, str] = {
        Consult.Status.ARRIVED: "waiting",
        Consult.Status.ASSIGNED: "assigned",
        Consult.Status.OPENED: "opened",
        Consult.Status.PRELIMINARY: "preliminary",
    }
    for row in counts:
        holder = shared if row["radiologist_id"] is None else by_reader[row["radiologist_id"]]
        name = field_of[row["status"]]
        setattr(holder, name, getattr(holder, name) + row["n"])
        holder.overdue += row["late"]
    ordered = sorted(
        by_reader.values(),
        key=lambda h: (-h.total, pinyin_key(str(h.radiologist)), h.radiologist.pk if h.radiologist else 0),
    )
    return [*ordered, shared]


def _require_reader(user: User, consult: Consult) -> None:
    if not (user.is_active and user.is_radiologist and user.can_read(consult.kind)):
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


# --- Assignment, claim, release, reassignment ----------------------------------------------


def _give(consult: Consult, reader: User, now: datetime, how: str) -> None:
    consult.radiologist = reader
    consult.assignment = how
    consult.assigned_at = _not_before(now, consult.arrived_at)
    # A claim is the reader taking the consult to read now: it opens it. One given by the
    # roster or a reassignment waits for its reader to open it (a POST, never a page view).
    claimed = how == Assignment.CLAIMED
    consult.claimed_at = consult.assigned_at if claimed else None
    consult.opened_at = consult.assigned_at if claimed else None
    consult.status = Consult.Status.OPENED if claimed else Consult.Status.ASSIGNED
    consult.save(update_fields=["radiologist", "assignment", "assigned_at", "claimed_at", "opened_at", "status"])
    publish(consult, Change.ASSIGNED)


def _take_back(consult: Consult) -> None:
    consult.radiologist = None
    consult.assignment = ""
    consult.assigned_at = None
    consult.claimed_at = None
    consult.opened_at = None
    consult.status = Consult.Status.ARRIVED
    consult.save(update_fields=["radiologist", "assignment", "assigned_at", "claimed_at", "opened_at", "status"])
    publish(consult, Change.RELEASED)


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
    """Take a consult from the shared worklist and start reading it; it is then locked to `user`."""
    now = _now(now)
    with transaction.atomic():
        locked = _lock(consult)
        require(Step.CLAIM, user, locked, now)
        _give(locked, user, now, Assignment.CLAIMED)
        audit("consults.consult.claimed", actor=user, obj=locked)
        audit("consults.consult.opened", actor=user, obj=locked)
    return _refresh(consult, locked)


def release_consult(consult: Consult, user: User, now: datetime | None = None) -> Consult:
    """The reader gives a held consult back to the shared worklist. A draft report stays."""
    with transaction.atomic():
        locked = _lock(consult)
        require(Step.RELEASE, user, locked, now)
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
    with transaction.atomic():
        locked = _lock(consult)
        if by is not None:
            require(Step.REASSIGN, by, locked, now)
        elif locked.status not in (Consult.Status.ARRIVED, *HELD_STATUSES):
            raise WorkflowError(_("该会诊已初诊或签发，不能重新分配。"))
        reader = _move(locked, by=by, to=to, now=now, reason=reason)
    _refresh(consult, locked)
    return reader


def _move(
    locked: Consult, *, by: User | None, to: User | None, now: datetime, reason: str, note: str = ""
) -> User | None:
    """A reassignment of a locked consult whose rule has been asked: to `to` (who must be
    qualified), else to the least loaded other reader on duty, else back to the shared
    worklist; audited (`consults.consult.reassigned`, with the `note` its mover wrote)."""
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
        return reader
    if reader is None:
        if previous is None:
            return None
        _take_back(locked)
    else:
        _give(locked, reader, now, Assignment.REASSIGNED)
    detail: dict[str, Any] = {
        "previous": previous.get_username() if previous else "",
        "radiologist": reader.get_username() if reader else "",
        "reason": reason,
    }
    if note:
        detail["note"] = note
    audit("consults.consult.reassigned", actor=by, obj=locked, **detail)
    return reader


def consult_label(consult: Consult) -> str:
    """How a refusal names one consult of many, without the patient (an administrator's
    page shows no patients): township, kind, body parts, arrival."""
    parts = [consult.facility.short_name_in(), consult.get_kind_display(), consult.body_part_names]
    arrived = timezone.localtime(consult.arrived_at).strftime("%Y-%m-%d %H:%M")
    return " ".join(part for part in parts if part) + f"（{_('到达')} {arrived}）"


@dataclass
class BulkReassignment:
    moved: list[Consult]
    already_held: list[Consult]


def reassign_consults(
    consults: list[Consult],
    *,
    by: User,
    to: User,
    now: datetime | None = None,
    note: str = "",
) -> BulkReassignment:
    """Move many consults to one reader at once: an administrator's answer to a reader who
    is away. All or none, in one transaction: every consult must still be open to
    reassignment (not preliminary, signed or cancelled), `to` must be an active radiologist
    on duty now and qualified for each consult's kind, and `by` allowed to reassign; the
    first refusal, naming its consult, undoes the lot. Each consult moved is moved as
    `reassign_consult` moves one (its audit entry, the new reader's worklist), so its
    history reads like a single reassignment. Consults `to` already holds stay as they are.
    `note` is what the administrator wrote ("李医生请假")."""
    now = _now(now)
    if not consults:
        raise WorkflowError(str(NO_CONSULTS_CHOSEN))
    with transaction.atomic():
        # Locked in one order, so two administrators moving overlapping sets cannot deadlock.
        locked = list(
            Consult.objects.select_for_update()
            .select_related("facility")
            .filter(pk__in=[c.pk for c in consults])
            .order_by("pk")
        )
        if len(locked) != len({c.pk for c in consults}):
            raise WorkflowError(str(CONSULTS_GONE))
        if not (to.is_active and to.is_radiologist and is_on_duty(to, now)):
            raise WorkflowError(_("%(reader)s 现在不在班，不能接收会诊。") % {"reader": to})
        for consult in locked:
            refused = move_refusal(by, consult)
            if refused is None and not to.can_read(consult.kind):
                refused = NotAllowed(
                    _("%(reader)s 没有阅读%(kind)s的资格。") % {"reader": to, "kind": consult.get_kind_display()}
                )
            if refused is not None:
                raise type(refused)(f"{consult_label(consult)}：{refused}")
        result = BulkReassignment(moved=[], already_held=[])
        for consult in locked:
            if consult.radiologist_id == to.pk and consult.status in HELD_STATUSES:
                result.already_held.append(consult)
                continue
            _move(consult, by=by, to=to, now=now, reason="administrator", note=note)
            result.moved.append(consult)
    return result


def open_consult(consult: Consult, user: User, now: datetime | None = None) -> Consult:
    """The holder of a consult given to them starts reading it (开始阅片, a POST). Viewing the
    page does not open it: a link followed or a page prefetched is not a reader at work."""
    now = _now(now)
    with transaction.atomic():
        locked = _lock(consult)
        require(Step.OPEN, user, locked, now)
        locked.status = Consult.Status.OPENED
        locked.opened_at = _not_before(now, locked.arrived_at)
        locked.save(update_fields=["status", "opened_at"])
        publish(locked, Change.OPENED)
        audit("consults.consult.opened", actor=user, obj=locked)
    return _refresh(consult, locked)


# --- The technologist's request --------------------------------------------------------------

REQUEST_FIELDS = ("clinical_history", "body_parts", "body_part_names", "priority", "question")


def correct_request(consult: Consult, user: User, **changes: Any) -> Consult:
    """A technologist of the township corrects the request until a reader opens it."""
    require(Step.CORRECT_REQUEST, user, consult)
    unknown = set(changes) - set(REQUEST_FIELDS)
    if unknown:
        raise ValueError(f"not request fields: {sorted(unknown)}")
    check_request(priority=changes.get("priority"), body_parts=changes.get("body_parts"))
    with transaction.atomic():
        locked = _lock(consult)
        require(Step.CORRECT_REQUEST, user, locked)
        before = {name: getattr(locked, name) for name in changes}
        for name, value in changes.items():
            setattr(locked, name, value)
        locked.due_at = due_at_for(locked)
        locked.save(update_fields=[*changes, "due_at"])
        publish(locked, Change.CORRECTED)
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


def save_draft(consult: Consult, user: User, findings: str, impression: str, now: datetime | None = None) -> Report:
    now = _now(now)
    with transaction.atomic():
        locked = _lock(consult)
        require(Step.EDIT, user, locked, now)
        # The holder writes as the reader; a senior reviewing a preliminary does not take it over.
        as_reader = locked.status in HELD_STATUSES
        if locked.status == Consult.Status.ASSIGNED:
            locked.status = Consult.Status.OPENED
            locked.opened_at = _not_before(now, locked.arrived_at)
            locked.save(update_fields=["status", "opened_at"])
            publish(locked, Change.OPENED)
            audit("consults.consult.opened", actor=user, obj=locked)
        report = _write(locked, user, findings, impression, as_reader=as_reader)
        audit("consults.report.saved", actor=user, obj=locked)
    _refresh(consult, locked)
    return report


def _require_text(report: Report) -> None:
    if not report.impression.strip():
        raise WorkflowError(str(EMPTY_IMPRESSION))


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
        require(Step.PRELIMINARY, user, locked, now)
        report = _write(locked, user, findings, impression, as_reader=True)
        _require_text(report)
        report.preliminary_by = user
        report.save(update_fields=["preliminary_by", "updated_at"])
        locked.status = Consult.Status.PRELIMINARY
        locked.opened_at = locked.opened_at or _not_before(now, locked.arrived_at)
        locked.preliminary_at = _not_before(now, locked.opened_at)
        locked.save(update_fields=["status", "opened_at", "preliminary_at"])
        publish(locked, Change.PRELIMINARY)
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
        require(Step.SIGN, user, locked, now)
        report = _write(locked, user, findings, impression, as_reader=locked.status in HELD_STATUSES)
        _require_text(report)
        signed_at = _not_before(now, locked.preliminary_at or locked.opened_at or locked.arrived_at)
        report.signed_by = user
        report.signed_at = signed_at
        report.save(update_fields=["signed_by", "signed_at", "updated_at"])
        locked.opened_at = locked.opened_at or _not_before(now, locked.arrived_at)
        locked.status = Consult.Status.SIGNED
        locked.signed_at = signed_at
        locked.save(update_fields=["status", "opened_at", "signed_at"])
        publish(locked, Change.SIGNED)
        # The digest behind the printed report's QR code, of the content as signed.
        record_signature(report, now)
        if locked.study_id is not None:
            # The archive keeps corrections of a signed study's images pending (cloudpacs
            # cannot ask consults): it reads this.
            Study.objects.filter(pk=locked.study_id).update(report_signed_at=signed_at)
        audit(
            "consults.report.signed",
            actor=user,
            obj=locked,
            preliminary_by=report.preliminary_by.get_username() if report.preliminary_by else "",
        )
        # The send-back to the township's archive: a row in the outbox now, the C-STORE
        # later, so an archive that is down never holds up the signature.
        outbox = _write_outbox(locked, now)
        if outbox is not None:
            # To a worker on commit; without a broker, to the ticker's periodic run
            # (cloudpacs.celery.WorkerOnlyTask), never in this request.
            handoff.slots.deliver_report(outbox.pk)
    _refresh(consult, locked)
    return report


def _write_outbox(consult: Consult, now: datetime) -> ReportDelivery | None:
    """In the signing transaction: the row that says this report is still to be sent back.

    None where the township's modality has no address: it reads the report on the web."""
    address = outbox.address_of(consult)
    if address is None:
        return None
    delivery, created = ReportDelivery.objects.get_or_create(
        consult=consult,
        defaults={
            "destination": outbox.address_label(address),
            "sop_instance_uid": generate_uid(),
            "series_instance_uid": generate_uid(),
            "next_attempt_at": now,
            "created_at": now,
        },
    )
    if created:
        audit("consults.report.send_queued", obj=consult, to=delivery.destination)
    return delivery


def add_addendum(consult: Consult, user: User, text: str) -> Addendum:
    """A later change to a signed report: appended with its author and time, never edited in."""
    text = text.strip()
    with transaction.atomic():
        locked = _lock(consult)
        require(Step.ADDENDUM, user, locked)
        if not text:
            raise WorkflowError(str(EMPTY_ADDENDUM))
        report = report_for(locked)
        if report is None or not report.is_signed:
            raise WorkflowError(_("报告签发后才能添加补充报告。"))
        addendum = Addendum.objects.create(report=report, author=user, text=text)
        audit("consults.report.addendum", actor=user, obj=locked, addendum=addendum.pk)
    return addendum


def confirm_receipt(consult: Consult, user: User, channel: str = "web", now: datetime | None = None) -> bool:
    """A technologist of the township says the signed report reached them (已收到), or takes
    its PDF through the print button's POST (`channel="pdf"`). Returns whether this was the
    delivery; a report already delivered stays as it was."""
    with transaction.atomic():
        locked = _lock(consult)
        require(Step.RECEIVE, user, locked, now)
        delivered = mark_delivered(locked, user=user, channel=channel, now=now)
    _refresh(consult, locked)
    return delivered


def mark_delivered(
    consult: Consult, *, user: User | None = None, channel: str = "web", now: datetime | None = None
) -> bool:
    """The signed report has reached the township, recorded once: the send-back's C-STORE
    succeeded (`channel="dicom"`), or a technologist confirmed it (`confirm_receipt`).
    Returns whether this call recorded it."""
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
        publish(locked, Change.DELIVERED)
        audit("consults.report.delivered", actor=user, obj=locked, channel=channel)
    _refresh(consult, locked)
    return True


# --- Critical findings (危急值) -------------------------------------------------------------


def flag_critical(consult: Consult, user: User, description: str, now: datetime | None = None) -> CriticalFinding:
    """The reader flags a critical finding; the township sees it at once on its pages, and by
    e-mail where the facility has an alert address."""
    now = _now(now)
    description = description.strip()
    with transaction.atomic():
        locked = _lock(consult)
        require(Step.FLAG_CRITICAL, user, locked, now)
        if not description:
            raise WorkflowError(str(EMPTY_CRITICAL))
        finding = CriticalFinding.objects.create(
            consult=locked, description=description, flagged_by=user, flagged_at=now
        )
        audit("consults.critical.flagged", actor=user, obj=locked, finding=str(finding.uuid))
        if locked.facility.alert_email:
            _queue_mail(locked, locked.facility.alert_email, now, finding=finding)
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
    with transaction.atomic():
        locked = _lock(consult)
        require(Step.ACKNOWLEDGE, user, locked, now)
        finding = CriticalFinding.objects.select_for_update().get(pk=finding.pk)
        if finding.acknowledged_at is not None:
            return finding
        finding.acknowledged_by = user
        finding.acknowledged_at = _not_before(now, finding.flagged_at)
        finding.save(update_fields=["acknowledged_by", "acknowledged_at"])
        if locked.acknowledged_at is None:
            locked.acknowledged_at = finding.acknowledged_at
            locked.save(update_fields=["acknowledged_at"])
            publish(locked, Change.ACKNOWLEDGED)
        audit(
            "consults.critical.acknowledged",
            actor=user,
            obj=locked,
            finding=str(finding.uuid),
            minutes=round((finding.acknowledged_at - finding.flagged_at).total_seconds() / 60, 1),
        )
    return finding


# --- E-mail ----------------------------------------------------------------------------------


def _queue_mail(
    consult: Consult,
    recipient: str,
    now: datetime,
    *,
    finding: CriticalFinding | None = None,
    escalation: Escalation | None = None,
) -> None:
    """In the step's transaction: the alert's row in the mail outbox; on commit, one try to
    hand it to a worker. The periodic check sends whatever that try did not (a broker or a
    mail server that is down), so an alert is never lost with the task that was to send it."""
    kind = Notification.Kind.CRITICAL if finding is not None else Notification.Kind.ESCALATION
    row = Notification.objects.create(
        kind=kind,
        consult=consult,
        critical_finding=finding,
        escalation=escalation,
        recipient=recipient,
        # Due at once by the clock the sender reads, whatever `now` the step was given.
        next_attempt_at=min(now, timezone.now()),
        created_at=now,
    )
    audit(f"consults.{kind}.email_queued", obj=consult, to=recipient, notification=row.pk)
    handoff.slots.send_notification(row.pk)


def _queue_escalation_email(escalation: Escalation) -> None:
    if escalation.to_user is not None and escalation.to_user.email:
        _queue_mail(escalation.consult, escalation.to_user.email, escalation.at, escalation=escalation)


# --- The periodic check --------------------------------------------------------------------


@dataclass
class CheckResult:
    assigned: list[int] = field(default_factory=list)
    reassigned_off_duty: list[int] = field(default_factory=list)
    flagged: list[int] = field(default_factory=list)
    escalated: list[int] = field(default_factory=list)
    critical_escalated: list[int] = field(default_factory=list)


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
        publish(locked, Change.ESCALATED)
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
    consults = Consult.objects.held().filter(radiologist__isnull=False).exclude(radiologist__in=current)
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
        # Only kinds someone on duty reads: assign_consult is a write transaction, and on
        # SQLite hundreds of them a minute, each finding nobody, queue the receiver's
        # C-STOREs behind the one write lock.
        kinds = [kind for kind in ExamKind.values if on_duty(now, kind).exists()]
        waiting = Consult.objects.filter(status=Consult.Status.ARRIVED, radiologist__isnull=True, kind__in=kinds)
        for consult in waiting.by_urgency():
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

    for consult in Consult.objects.open().select_related("radiologist", "study").by_urgency():
        # The limit stored when the consult arrived (or its request was corrected) is the
        # one that counts; one written before due_at was always stored gets it now.
        due = consult.due_at
        if due is None:
            due = consult.due_at = due_at_for(consult)
            with transaction.atomic():
                Consult.objects.filter(pk=consult.pk).update(due_at=due)
                publish(consult, Change.DUE)
        if now >= due and consult.escalated_at is None:
            _escalate_late(consult, now)
            result.escalated.append(consult.pk)
        elif now >= near_limit_at(consult) and consult.flagged_at is None:
            with transaction.atomic():
                Consult.objects.filter(pk=consult.pk).update(flagged_at=now)
                publish(consult, Change.FLAGGED)
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
