"""Consults (远程会诊): one per study to read, from arrival to a report back at the township."""

from __future__ import annotations

import uuid
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Case, F, IntegerField, Q, Value, When
from django.utils.translation import gettext_lazy as _

from cloudpacs.models import Study
from consults.template_library import digest
from facilities.models import ExamKind, Facility, Modality


class Priority(models.TextChoices):
    ROUTINE = "routine", _("常规")
    URGENT = "urgent", _("加急")
    EMERGENCY = "emergency", _("急诊")


class Assignment(models.TextChoices):
    ROSTER = "roster", _("排班分配")
    CLAIMED = "claimed", _("主动领取")
    REASSIGNED = "reassigned", _("重新分配")


class ConsultQuerySet(models.QuerySet["Consult"]):
    def open(self) -> ConsultQuerySet:
        """Waiting for a report: the time limit runs, and the worklist shows them."""
        return self.filter(status__in=OPEN_STATUSES)

    def held(self) -> ConsultQuerySet:
        """Held by a reader who has not signed them yet: their lock applies."""
        return self.filter(status__in=HELD_STATUSES)

    def by_urgency(self) -> ConsultQuerySet:
        """Emergency first, then urgent, then routine; within each, the longest waiting first."""
        rank = Case(
            When(priority=Priority.EMERGENCY, then=Value(0)),
            When(priority=Priority.URGENT, then=Value(1)),
            default=Value(2),
            output_field=IntegerField(),
        )
        return self.annotate(urgency_rank=rank).order_by("urgency_rank", "arrived_at", "id")


class Consult(models.Model):
    class Status(models.TextChoices):
        ARRIVED = "arrived", _("待分配")
        ASSIGNED = "assigned", _("已分配")
        OPENED = "opened", _("阅片中")
        PRELIMINARY = "preliminary", _("已初诊")
        SIGNED = "signed", _("已签发")
        DELIVERED = "delivered", _("已送达")
        CANCELLED = "cancelled", _("已取消")

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    # Null for the historical consults of the demo, whose images were never in this archive.
    study = models.OneToOneField(Study, on_delete=models.PROTECT, null=True, blank=True, related_name="consult")
    facility = models.ForeignKey(
        Facility, on_delete=models.PROTECT, related_name="consults", verbose_name=_("申请机构")
    )
    modality = models.ForeignKey(
        Modality, on_delete=models.PROTECT, null=True, blank=True, related_name="consults", verbose_name=_("设备")
    )
    kind = models.CharField(_("检查类型"), max_length=4, choices=ExamKind.choices)
    exam_date = models.DateField(_("检查日期"))
    body_parts = models.PositiveSmallIntegerField(_("部位数"), default=1)
    body_part_names = models.CharField(_("检查部位"), max_length=128, blank=True)
    priority = models.CharField(_("优先级"), max_length=16, choices=Priority.choices, default=Priority.ROUTINE)
    clinical_history = models.TextField(_("病史摘要"), blank=True)
    question = models.TextField(_("会诊目的"), blank=True)
    status = models.CharField(_("状态"), max_length=16, choices=Status.choices, default=Status.ARRIVED)
    radiologist = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="consults",
        verbose_name=_("诊断医师"),
    )
    arrived_at = models.DateTimeField(_("到达时间"))
    assigned_at = models.DateTimeField(_("分配时间"), null=True, blank=True)
    opened_at = models.DateTimeField(_("打开时间"), null=True, blank=True)
    preliminary_at = models.DateTimeField(_("初诊时间"), null=True, blank=True)
    signed_at = models.DateTimeField(_("签发时间"), null=True, blank=True)
    delivered_at = models.DateTimeField(_("送达时间"), null=True, blank=True)
    # The reading workflow. A held consult (radiologist set) is locked to that reader until
    # released or reassigned; claimed_at is set when the reader took it from the shared list.
    assignment = models.CharField(_("分配方式"), max_length=16, choices=Assignment.choices, blank=True)
    claimed_at = models.DateTimeField(_("领取时间"), null=True, blank=True)
    # Arrival plus the time limit for the priority and modality (settings.CONSULT_TIME_LIMITS).
    due_at = models.DateTimeField(_("诊断时限"), null=True, blank=True, db_index=True)
    flagged_at = models.DateTimeField(_("临近时限提醒时间"), null=True, blank=True)
    escalated_at = models.DateTimeField(_("超时上报时间"), null=True, blank=True)
    # The township's acknowledgement of the consult's first critical finding (危急值).
    acknowledged_at = models.DateTimeField(_("危急值确认时间"), null=True, blank=True)

    objects = ConsultQuerySet.as_manager()

    class Meta:
        verbose_name = _("会诊")
        verbose_name_plural = _("会诊")
        indexes = [
            models.Index(fields=["status", "priority", "arrived_at"], name="consult_worklist"),
            models.Index(fields=["facility", "exam_date"], name="consult_facility_date"),
            models.Index(fields=["exam_date"], name="consult_exam_date"),
            models.Index(fields=["radiologist", "exam_date"], name="consult_radiologist_date"),
            # The consults not signed yet, by their limit: the few past it (the time-limit
            # report's overdue count) without reading the millions signed.
            models.Index(fields=["due_at"], condition=Q(signed_at__isnull=True), name="consult_unsigned_due"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(body_parts__gte=1), name="consult_has_a_body_part"),
            models.CheckConstraint(
                condition=Q(assigned_at__isnull=True) | Q(assigned_at__gte=F("arrived_at")),
                name="consult_assigned_after_arrival",
            ),
            models.CheckConstraint(
                condition=Q(opened_at__isnull=True) | Q(opened_at__gte=F("arrived_at")),
                name="consult_opened_after_arrival",
            ),
            models.CheckConstraint(
                condition=Q(signed_at__isnull=True) | Q(signed_at__gte=F("arrived_at")),
                name="consult_signed_after_arrival",
            ),
            models.CheckConstraint(
                condition=Q(delivered_at__isnull=True)
                | (Q(signed_at__isnull=False) & Q(delivered_at__gte=F("signed_at"))),
                name="consult_delivered_after_signing",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.facility.short_name_in()} {self.kind} {self.exam_date} ({self.get_status_display()})"

    @property
    def is_open(self) -> bool:
        """Waiting for a report: the time limit runs (ConsultQuerySet.open())."""
        return self.status in OPEN_STATUSES

    @property
    def is_held(self) -> bool:
        """Held by a reader who has not signed it yet: their lock applies (ConsultQuerySet.held())."""
        return self.status in HELD_STATUSES

    @property
    def consult_time(self) -> timedelta | None:
        """Arrival to signed report: the turnaround the paper's Figure 2 reports."""
        if self.signed_at is None:
            return None
        return self.signed_at - self.arrived_at


class ConsultChange(models.Model):
    """The consults' change feed: an outbox row written by the workflow in the same
    transaction as each change to a consult (consults.changes.publish), for the apps above
    consults to follow without consults calling them. Billing's rollup takes the rows and
    deletes them in its own transaction (consults.changes.taken): a row is there until the
    change it reports has been followed. Not the audit trail, which keeps who did what
    forever; a row here says only which consult, of which township and exam date, changed."""

    consult = models.ForeignKey(Consult, on_delete=models.CASCADE, related_name="+")
    facility = models.ForeignKey(Facility, on_delete=models.CASCADE, related_name="+")
    exam_date = models.DateField()
    # consults.changes.Change: the step that changed it.
    change = models.CharField(max_length=16)
    at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.consult_id} {self.change} {self.at:%Y-%m-%d %H:%M:%S}"


# Held by a reader and not yet signed by them: the lock applies.
HELD_STATUSES = (Consult.Status.ASSIGNED, Consult.Status.OPENED)
# Waiting for a report: the time limit runs.
OPEN_STATUSES = (Consult.Status.ARRIVED, *HELD_STATUSES, Consult.Status.PRELIMINARY)


class Report(models.Model):
    """The radiologist's report. Once signed it is never edited; changes are addenda."""

    consult = models.OneToOneField(Consult, on_delete=models.PROTECT, related_name="report")
    findings = models.TextField(_("影像所见"), blank=True)
    impression = models.TextField(_("诊断意见"), blank=True)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+", verbose_name=_("报告医师")
    )
    preliminary_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("初诊医师"),
    )
    signed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("审核医师"),
    )
    signed_at = models.DateTimeField(_("签发时间"), null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("报告")
        verbose_name_plural = _("报告")

    def __str__(self) -> str:
        return f"{self.consult}: {self.impression[:30]}"

    def save(self, *args: object, **kwargs: object) -> None:
        if self.pk is not None:
            previous = Report.objects.filter(pk=self.pk).values("signed_at", "findings", "impression").first()
            if (
                previous
                and previous["signed_at"] is not None
                and (previous["findings"] != self.findings or previous["impression"] != self.impression)
            ):
                raise ValidationError(_("报告已签发，不能修改；请添加补充报告。"))
        super().save(*args, **kwargs)  # type: ignore[arg-type]

    @property
    def is_signed(self) -> bool:
        return self.signed_at is not None


class Addendum(models.Model):
    report = models.ForeignKey(Report, on_delete=models.PROTECT, related_name="addenda")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    text = models.TextField(_("补充内容"))
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("补充报告")
        verbose_name_plural = _("补充报告")
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.report_id} {self.created_at:%Y-%m-%d %H:%M}"


class ReportLanguage(models.TextChoices):
    """The languages a report text is written in: the interface's two."""

    ZH_HANS = "zh-hans", _("中文")
    EN = "en", _("英文")


def report_language(language: str | None) -> str:
    """The report language for an interface language code (en, en-us -> en; else Chinese)."""
    return ReportLanguage.EN if (language or "").lower().startswith("en") else ReportLanguage.ZH_HANS


class ReportTemplate(models.Model):
    """A normal-findings text per modality and body part that a report starts from.

    The library's templates (consults.template_library) carry its key, the version they
    were installed from and a digest of the text as installed: an upgrade rewrites a
    template only while its text still matches that digest, so a hospital's edits stay."""

    name = models.CharField(_("名称"), max_length=64)
    kind = models.CharField(_("检查类型"), max_length=4, choices=ExamKind.choices)
    # The label shown beside the name ("胸部", "四肢"); which studies it is offered for is `parts`.
    body_part = models.CharField(_("检查部位"), max_length=32)
    parts = models.ManyToManyField(
        "cloudpacs.BodyPart", blank=True, related_name="report_templates", verbose_name=_("适用部位")
    )
    language = models.CharField(_("语言"), max_length=8, choices=ReportLanguage.choices, default=ReportLanguage.ZH_HANS)
    findings = models.TextField(_("影像所见"))
    impression = models.TextField(_("诊断意见"))
    library_key = models.CharField(_("模板库编号"), max_length=32, blank=True, db_index=True)
    library_version = models.PositiveSmallIntegerField(_("模板库版本"), null=True, blank=True)
    library_digest = models.CharField(_("安装时文本摘要"), max_length=64, blank=True, editable=False)
    # Null for the templates the platform ships with.
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("创建人"),
    )
    is_active = models.BooleanField(_("启用"), default=True)
    created_at = models.DateTimeField(_("创建时间"), auto_now_add=True)

    class Meta:
        verbose_name = _("报告模板")
        verbose_name_plural = _("报告模板")
        ordering = ["kind", "body_part", "name", "id"]

    def __str__(self) -> str:
        return f"{self.kind} {self.body_part} {self.name}"

    @property
    def is_edited(self) -> bool:
        """A library template whose text the hospital has changed since it was installed."""
        return bool(self.library_key) and digest(self.name, self.findings, self.impression) != self.library_digest


class Phrase(models.Model):
    """A sentence a radiologist inserts into a report: their own (owner set) or the
    department's (no owner, kept by administrators). Typed by its shortcut then Tab, or
    found by searching its text on the reading page."""

    uuid = models.UUIDField(_("标识"), default=uuid.uuid4, unique=True, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="phrases",
        verbose_name=_("所属医师"),
        help_text=_("留空为全科室共用。"),
    )
    language = models.CharField(_("语言"), max_length=8, choices=ReportLanguage.choices, default=ReportLanguage.ZH_HANS)
    kind = models.CharField(
        _("检查类型"), max_length=4, choices=ExamKind.choices, blank=True, help_text=_("留空为不限。")
    )
    shortcut = models.CharField(
        _("缩写"), max_length=16, blank=True, help_text=_("字母或数字，如 fjz；在报告中输入后按 Tab 插入。")
    )
    text = models.TextField(_("内容"))
    is_active = models.BooleanField(_("启用"), default=True)
    created_at = models.DateTimeField(_("创建时间"), auto_now_add=True)
    updated_at = models.DateTimeField(_("修改时间"), auto_now=True)

    class Meta:
        verbose_name = _("常用语")
        verbose_name_plural = _("常用语")
        ordering = ["shortcut", "id"]

    def __str__(self) -> str:
        return f"{self.shortcut or '—'} {self.text[:30]}"

    @property
    def is_department(self) -> bool:
        return self.owner_id is None


class Escalation(models.Model):
    """A consult or a critical finding raised past its reader: what, why, to whom, when."""

    class Reason(models.TextChoices):
        TIME_LIMIT = "time_limit", _("超过诊断时限")
        OFF_DUTY = "off_duty", _("诊断医师下班")
        CRITICAL_UNACKNOWLEDGED = "critical", _("危急值未确认")

    consult = models.ForeignKey(Consult, on_delete=models.PROTECT, related_name="escalations")
    critical_finding = models.ForeignKey(
        "CriticalFinding", on_delete=models.PROTECT, null=True, blank=True, related_name="escalations"
    )
    reason = models.CharField(_("原因"), max_length=16, choices=Reason.choices)
    at = models.DateTimeField(_("时间"))
    from_radiologist = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    to_user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="escalations_received",
        verbose_name=_("上报给"),
    )
    reassigned = models.BooleanField(_("已重新分配"), default=False)
    emailed_at = models.DateTimeField(_("邮件通知时间"), null=True, blank=True)

    class Meta:
        verbose_name = _("上报记录")
        verbose_name_plural = _("上报记录")
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"{self.consult_id} {self.reason} {self.at:%Y-%m-%d %H:%M}"


class CriticalFinding(models.Model):
    """危急值: flagged by the reader, acknowledged by the township, escalated if it is not."""

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    consult = models.ForeignKey(Consult, on_delete=models.PROTECT, related_name="critical_findings")
    description = models.TextField(_("危急值内容"))
    flagged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+", verbose_name=_("报告医师")
    )
    flagged_at = models.DateTimeField(_("报告时间"))
    emailed_at = models.DateTimeField(_("邮件通知时间"), null=True, blank=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("确认人"),
    )
    acknowledged_at = models.DateTimeField(_("确认时间"), null=True, blank=True)
    escalated_at = models.DateTimeField(_("上报时间"), null=True, blank=True)

    class Meta:
        verbose_name = _("危急值")
        verbose_name_plural = _("危急值")
        ordering = ["flagged_at", "id"]
        indexes = [models.Index(fields=["acknowledged_at", "flagged_at"], name="critical_open")]
        constraints = [
            models.CheckConstraint(
                condition=Q(acknowledged_at__isnull=True) | Q(acknowledged_at__gte=F("flagged_at")),
                name="critical_acknowledged_after_flagging",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.consult_id} {self.description[:30]}"

    @property
    def is_acknowledged(self) -> bool:
        return self.acknowledged_at is not None


class ReportDelivery(models.Model):
    """The outbox of the send-back: one row per signed report bound for the township's own
    archive, written in the signing transaction and sent afterwards by a task (a worker's,
    or the ticker's periodic run without a broker), so that an archive that is down never
    holds up the signature. Failed attempts are retried with a growing delay.

    The instance UIDs are fixed when the row is written: every attempt sends the same
    instance, so an attempt that reached the archive but was not recorded here is, at
    worst, the same object stored again."""

    class Status(models.TextChoices):
        PENDING = "pending", _("等待回传")
        SENDING = "sending", _("回传中")
        RETRYING = "retrying", _("回传重试中")
        SENT = "sent", _("已回传")
        FAILED = "failed", _("回传失败")

    consult = models.OneToOneField(Consult, on_delete=models.PROTECT, related_name="delivery")
    status = models.CharField(_("回传状态"), max_length=16, choices=Status.choices, default=Status.PENDING)
    destination = models.CharField(_("回传目标"), max_length=128)
    sop_instance_uid = models.CharField(max_length=64, unique=True)
    series_instance_uid = models.CharField(max_length=64)
    attempts = models.PositiveSmallIntegerField(_("尝试次数"), default=0)
    next_attempt_at = models.DateTimeField(_("下次尝试时间"))
    # When the attempt now under way started: an attempt whose process died is taken
    # up again once this is older than the attempt could possibly last.
    claimed_at = models.DateTimeField(null=True, blank=True)
    last_attempt_at = models.DateTimeField(_("最近尝试时间"), null=True, blank=True)
    last_error = models.CharField(_("失败原因"), max_length=255, blank=True)
    sent_at = models.DateTimeField(_("回传时间"), null=True, blank=True)
    created_at = models.DateTimeField(_("创建时间"))

    class Meta:
        verbose_name = _("报告回传")
        verbose_name_plural = _("报告回传")
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="delivery_due")]

    def __str__(self) -> str:
        return f"{self.consult_id} -> {self.destination} ({self.status})"

    @property
    def is_open(self) -> bool:
        return self.status in (self.Status.PENDING, self.Status.SENDING, self.Status.RETRYING)


class Notification(models.Model):
    """The outbox of alert e-mails: a critical finding's alert to the township, or an
    escalation's message to the reader or duty lead it went to. Written in the same
    transaction as the finding or escalation, sent afterwards by a task (a worker's, the
    periodic check's, or in-process without a broker), so that neither a broker nor a mail
    server that is down loses an alert; failed attempts are retried with a growing delay.

    Exactly one attempt is under way at a time (a conditional claim), and a row once sent
    is never sent again."""

    class Kind(models.TextChoices):
        CRITICAL = "critical", _("危急值通知")
        ESCALATION = "escalation", _("上报通知")

    class Status(models.TextChoices):
        PENDING = "pending", _("等待发送")
        SENDING = "sending", _("发送中")
        RETRYING = "retrying", _("发送重试中")
        SENT = "sent", _("已发送")
        FAILED = "failed", _("发送失败")

    kind = models.CharField(_("类型"), max_length=16, choices=Kind.choices)
    consult = models.ForeignKey(Consult, on_delete=models.PROTECT, related_name="notifications")
    critical_finding = models.OneToOneField(
        CriticalFinding, on_delete=models.PROTECT, null=True, blank=True, related_name="notification"
    )
    escalation = models.OneToOneField(
        Escalation, on_delete=models.PROTECT, null=True, blank=True, related_name="notification"
    )
    recipient = models.EmailField(_("收件人"))
    status = models.CharField(_("发送状态"), max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(_("尝试次数"), default=0)
    next_attempt_at = models.DateTimeField(_("下次尝试时间"))
    # When the attempt now under way started: an attempt whose process died is taken up
    # again once this is older than the attempt could possibly last.
    claimed_at = models.DateTimeField(null=True, blank=True)
    last_attempt_at = models.DateTimeField(_("最近尝试时间"), null=True, blank=True)
    last_error = models.CharField(_("失败原因"), max_length=255, blank=True)
    sent_at = models.DateTimeField(_("发送时间"), null=True, blank=True)
    created_at = models.DateTimeField(_("创建时间"))

    class Meta:
        verbose_name = _("邮件通知")
        verbose_name_plural = _("邮件通知")
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="notification_due")]
        constraints = [
            models.CheckConstraint(
                condition=(Q(kind="critical") & Q(critical_finding__isnull=False) & Q(escalation__isnull=True))
                | (Q(kind="escalation") & Q(escalation__isnull=False) & Q(critical_finding__isnull=True)),
                name="notification_about_one_thing",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} -> {self.recipient} ({self.status})"

    @property
    def is_open(self) -> bool:
        return self.status in (self.Status.PENDING, self.Status.SENDING, self.Status.RETRYING)


class ReportVerification(models.Model):
    """What the QR code on a printed report proves: a random token (not the consult's
    UUID) names this row, which keeps the SHA-256 of the report's signed content taken when
    it was signed. The public verification page recomputes it from the report as it is now;
    the PDF itself is rendered anew on each request, so the content is what is hashed."""

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    report = models.OneToOneField(Report, on_delete=models.PROTECT, related_name="verification")
    token = models.CharField(_("验证码"), max_length=64, unique=True)
    content_sha256 = models.CharField(_("签发内容摘要（SHA-256）"), max_length=64)
    created_at = models.DateTimeField(_("生成时间"))
    # False for a report signed before verification existed: its digest was taken when its
    # first PDF was printed, and the page says so.
    at_signing = models.BooleanField(_("签发时生成"), default=True)

    class Meta:
        verbose_name = _("报告验证")
        verbose_name_plural = _("报告验证")

    def __str__(self) -> str:
        return f"verification of report {self.report_id}"
