"""Consults (远程会诊): one per study to read, from arrival to a report back at the township."""

from __future__ import annotations

import uuid
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import F, Q
from django.utils.translation import gettext_lazy as _

from cloudpacs.models import Study
from facilities.models import ExamKind, Facility, Modality


class Priority(models.TextChoices):
    ROUTINE = "routine", _("常规")
    URGENT = "urgent", _("加急")
    EMERGENCY = "emergency", _("急诊")


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

    class Meta:
        verbose_name = _("会诊")
        verbose_name_plural = _("会诊")
        indexes = [
            models.Index(fields=["status", "priority", "arrived_at"], name="consult_worklist"),
            models.Index(fields=["facility", "exam_date"], name="consult_facility_date"),
            models.Index(fields=["exam_date"], name="consult_exam_date"),
            models.Index(fields=["radiologist", "exam_date"], name="consult_radiologist_date"),
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
        return f"{self.facility.short_name} {self.kind} {self.exam_date} ({self.get_status_display()})"

    @property
    def consult_time(self) -> timedelta | None:
        """Arrival to signed report: the turnaround the paper's Figure 2 reports."""
        if self.signed_at is None:
            return None
        return self.signed_at - self.arrived_at


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

    @property
    def is_signed(self) -> bool:
        return self.signed_at is not None

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
