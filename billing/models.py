"""Price schedules and the savings ledger.

A patient examined at a township pays the township (一级) price instead of the county
(二级) price; the ledger keeps one entry per exam with the prices of the edition in force
on the exam date, so every total can be traced to the exams behind it. Money is Decimal."""

from __future__ import annotations

import uuid

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import F, Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from consults.models import Consult
from facilities.models import ExamKind, Facility


class PriceSchedule(models.Model):
    """An edition of the provincial price list, e.g. 陕西省医疗服务项目价格 2021 版."""

    code = models.SlugField(_("代码"), max_length=32, unique=True)
    name = models.CharField(_("版本名称"), max_length=128)
    effective_from = models.DateField(_("生效日期"))
    effective_to = models.DateField(_("失效日期"), null=True, blank=True, help_text=_("留空表示仍有效（含当日）"))
    # Where the prices come from, so an administrator can check them: the notice that
    # published the edition, its date, and why the ledger applies it from effective_from
    # (which may differ from the notice's date: docs/savings-ledger.md).
    source = models.CharField(
        _("来源"), max_length=255, blank=True, help_text=_("发布价格的文件，如发文机关与文件名称")
    )
    source_url = models.URLField(_("来源网址"), max_length=500, blank=True)
    published_on = models.DateField(_("发布日期"), null=True, blank=True)
    basis = models.TextField(
        _("适用说明"), blank=True, help_text=_("为何自生效日期起按本版价格计算，尤其是早于发布日期的检查")
    )

    class Meta:
        verbose_name = _("价格标准")
        verbose_name_plural = _("价格标准")
        ordering = ["-effective_from"]
        constraints = [
            models.CheckConstraint(
                condition=Q(effective_to__isnull=True) | Q(effective_to__gte=F("effective_from")),
                name="schedule_ends_after_it_starts",
            )
        ]

    def __str__(self) -> str:
        return self.name


class PriceItem(models.Model):
    """The price of one body part of one exam kind at one hospital level."""

    schedule = models.ForeignKey(
        PriceSchedule, on_delete=models.CASCADE, related_name="items", verbose_name=_("价格标准")
    )
    exam_kind = models.CharField(_("检查类型"), max_length=4, choices=ExamKind.choices)
    level = models.PositiveSmallIntegerField(_("医院等级"), choices=Facility.Level.choices)
    item_code = models.CharField(_("项目编码"), max_length=32, blank=True)
    item_name = models.CharField(_("项目名称"), max_length=128, blank=True)
    price_per_part = models.DecimalField(_("每部位价格（元）"), max_digits=10, decimal_places=2)

    class Meta:
        verbose_name = _("价格项目")
        verbose_name_plural = _("价格项目")
        constraints = [
            models.UniqueConstraint(fields=["schedule", "exam_kind", "level"], name="one_price_per_kind_and_level"),
            models.CheckConstraint(condition=Q(price_per_part__gt=0), name="price_is_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.schedule.code} {self.exam_kind} L{self.level} {self.price_per_part}"


class LedgerEntryQuerySet(models.QuerySet["LedgerEntry"]):
    def update(self, **kwargs: object) -> int:
        raise ValidationError("the ledger is append-only")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise ValidationError("the ledger is append-only")


class LedgerEntry(models.Model):
    """One exam's saving. Append-only: a correction is a reversing entry with a reason."""

    consult = models.ForeignKey(
        Consult, on_delete=models.PROTECT, related_name="ledger_entries", verbose_name=_("会诊")
    )
    facility = models.ForeignKey(
        Facility, on_delete=models.PROTECT, related_name="ledger_entries", verbose_name=_("申请机构")
    )
    exam_kind = models.CharField(_("检查类型"), max_length=4, choices=ExamKind.choices)
    exam_date = models.DateField(_("检查日期"))
    body_parts = models.SmallIntegerField(_("部位数"), help_text=_("冲正记录为负数"))
    # Whether the count was ordered: the exam's order (or the township's request) named its
    # body parts. A consult that arrived with none named is counted as one part, and its
    # entry says the count is unconfirmed. None: recorded before this was kept.
    parts_confirmed = models.BooleanField(_("部位数已确认"), null=True, blank=True)
    schedule = models.ForeignKey(
        PriceSchedule, on_delete=models.PROTECT, related_name="ledger_entries", verbose_name=_("价格标准")
    )
    county_price = models.DecimalField(_("县医院价格（元）"), max_digits=10, decimal_places=2)
    township_price = models.DecimalField(_("乡镇价格（元）"), max_digits=10, decimal_places=2)
    saving = models.DecimalField(_("节省（元）"), max_digits=12, decimal_places=2)
    reverses = models.OneToOneField(
        "self",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="reversed_by",
        verbose_name=_("冲正的记录"),
    )
    reason = models.CharField(_("冲正原因"), max_length=255, blank=True)
    recorded_at = models.DateTimeField(_("记账时间"), default=timezone.now)

    objects = LedgerEntryQuerySet.as_manager()

    class Meta:
        verbose_name = _("节省台账")
        verbose_name_plural = _("节省台账")
        indexes = [
            models.Index(fields=["facility", "exam_date"], name="ledger_facility_date"),
            models.Index(fields=["exam_date"], name="ledger_exam_date"),
            # An edition's first and last exam date, in two probes (reports.savings.editions).
            models.Index(fields=["schedule", "exam_date"], name="ledger_schedule_date"),
            # The few entries billed on a count of parts nobody named, without reading the rest.
            models.Index(
                fields=["exam_date"],
                condition=Q(parts_confirmed=False, reverses__isnull=True),
                name="ledger_unconfirmed_date",
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["consult"], condition=Q(reverses__isnull=True), name="one_original_entry_per_exam"
            ),
            models.CheckConstraint(condition=Q(reverses__isnull=True) | ~Q(reason=""), name="a_reversal_has_a_reason"),
        ]

    def __str__(self) -> str:
        return f"{self.exam_date} {self.facility_id} {self.exam_kind} {self.saving}"

    def save(self, *args: object, **kwargs: object) -> None:
        if self.pk is not None:
            raise ValidationError("the ledger is append-only")
        super().save(*args, **kwargs)  # type: ignore[arg-type]

    def delete(self, *args: object, **kwargs: object) -> tuple[int, dict[str, int]]:
        raise ValidationError("the ledger is append-only")


# The measures of a consult's time kept in the rollup: the whole consult (arrival to signed
# report), then each stage (billing.dashboards.STAGES).
MEASURES = ("consult", "assign", "open", "sign", "deliver")


class TurnaroundFigures(models.Model):
    """The turnaround page's figures of a group of consults: signed consults, those within
    the time limit, and each measure's count (a stage not reached is left out), sum and sum
    of squares, in minutes, with histograms of each (billing.histogram)."""

    signed = models.PositiveIntegerField(default=0)
    within_limit = models.PositiveIntegerField(default=0)
    consult_n = models.PositiveIntegerField(default=0)
    consult_sum = models.FloatField(default=0.0)
    consult_sumsq = models.FloatField(default=0.0)
    assign_n = models.PositiveIntegerField(default=0)
    assign_sum = models.FloatField(default=0.0)
    assign_sumsq = models.FloatField(default=0.0)
    open_n = models.PositiveIntegerField(default=0)
    open_sum = models.FloatField(default=0.0)
    open_sumsq = models.FloatField(default=0.0)
    sign_n = models.PositiveIntegerField(default=0)
    sign_sum = models.FloatField(default=0.0)
    sign_sumsq = models.FloatField(default=0.0)
    deliver_n = models.PositiveIntegerField(default=0)
    deliver_sum = models.FloatField(default=0.0)
    deliver_sumsq = models.FloatField(default=0.0)
    histograms = models.BinaryField(default=b"")

    class Meta:
        abstract = True


class RollupFigures(TurnaroundFigures):
    """The dashboards' figures for one township, exam kind and radiologist over a period:
    counts, sums and sums of squares (for means and SDs), histograms of the consult time
    and of each stage (for medians and quartiles, billing.histogram), and the ledger's
    totals. Derived data: recomputed from the consults and the ledger whenever either
    changes (billing.rollup), never edited by hand."""

    facility = models.ForeignKey(Facility, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=4, choices=ExamKind.choices)
    radiologist = models.ForeignKey(
        "facilities.User", on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    # Volume: consults that are not cancelled, and their body parts.
    exams = models.PositiveIntegerField(default=0)
    exam_parts = models.PositiveIntegerField(default=0)
    # Savings: ledger entries (reversals included), their body parts and saving.
    ledger_entries = models.IntegerField(default=0)
    ledger_parts = models.IntegerField(default=0)
    saving = models.DecimalField(max_digits=14, decimal_places=2, default=0)
    # The exams billed (original entries not reversed: originals less reversals, since a
    # reversal shares its original's day, township, kind and consult): the travel page's.
    billed = models.IntegerField(default=0)
    # When the reports were signed, in local time (TIME_ZONE), for the workload page:
    # those signed on a Saturday or Sunday, and those signed on a weekday as records of
    # (minute of the day, count) (billing.histogram.RECORD), so that any night hours
    # (settings.REPORT_NIGHT_HOURS) are counted from them without the raw rows.
    signed_weekend = models.PositiveIntegerField(default=0)
    weekday_signing = models.BinaryField(default=b"")
    # The exams, signed and within the limit of the emergency and urgent priorities (the
    # routine ones are the rest): the time-limit page's, by priority.
    emergency_exams = models.PositiveIntegerField(default=0)
    emergency_signed = models.PositiveIntegerField(default=0)
    emergency_within = models.PositiveIntegerField(default=0)
    urgent_exams = models.PositiveIntegerField(default=0)
    urgent_signed = models.PositiveIntegerField(default=0)
    urgent_within = models.PositiveIntegerField(default=0)

    class Meta:
        abstract = True


class DailyRollup(RollupFigures):
    """The figures of one exam date."""

    day = models.DateField()

    class Meta:
        verbose_name = _("看板日汇总")
        verbose_name_plural = _("看板日汇总")
        indexes = [
            models.Index(fields=["day"], name="rollup_day"),
            models.Index(fields=["facility", "day"], name="rollup_facility_day"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["day", "facility", "kind", "radiologist"],
                condition=Q(radiologist__isnull=False),
                name="one_rollup_per_day_and_reader",
            ),
            models.UniqueConstraint(
                fields=["day", "facility", "kind"],
                condition=Q(radiologist__isnull=True),
                name="one_unread_rollup_per_day",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.facility_id} {self.kind} {self.radiologist_id}"


class MonthlyRollup(RollupFigures):
    """The daily rows of one calendar month added up: a page over whole months reads a
    thirtieth of the rows (a county has about one exam per day, township, kind and
    radiologist, so the daily rows alone are hardly fewer than the exams)."""

    month = models.DateField(help_text=_("当月第一天"))

    class Meta:
        verbose_name = _("看板月汇总")
        verbose_name_plural = _("看板月汇总")
        indexes = [
            models.Index(fields=["month"], name="rollup_month"),
            models.Index(fields=["facility", "month"], name="rollup_facility_month"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["month", "facility", "kind", "radiologist"],
                condition=Q(radiologist__isnull=False),
                name="one_rollup_per_month_and_reader",
            ),
            models.UniqueConstraint(
                fields=["month", "facility", "kind"],
                condition=Q(radiologist__isnull=True),
                name="one_unread_rollup_per_month",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.month:%Y-%m} {self.facility_id} {self.kind} {self.radiologist_id}"


class MonthlyTownshipRollup(models.Model):
    """The monthly rows of a township and kind with their radiologists added up, for the
    figures that are not by radiologist: volume, signed exams, the ledger's totals and
    the time-limit page's counts by priority. A
    province's monthly rows are one per radiologist (387,500 for 1,100 townships); these
    are a ninth of them. Read by `rollup_parts(..., by_radiologist=False)`."""

    month = models.DateField(help_text=_("当月第一天"))
    facility = models.ForeignKey(Facility, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=4, choices=ExamKind.choices)
    exams = models.PositiveIntegerField(default=0)
    exam_parts = models.PositiveIntegerField(default=0)
    signed = models.PositiveIntegerField(default=0)
    ledger_entries = models.IntegerField(default=0)
    ledger_parts = models.IntegerField(default=0)
    saving = models.DecimalField(max_digits=14, decimal_places=2, default=0)
    billed = models.IntegerField(default=0)
    within_limit = models.PositiveIntegerField(default=0)
    emergency_exams = models.PositiveIntegerField(default=0)
    emergency_signed = models.PositiveIntegerField(default=0)
    emergency_within = models.PositiveIntegerField(default=0)
    urgent_exams = models.PositiveIntegerField(default=0)
    urgent_signed = models.PositiveIntegerField(default=0)
    urgent_within = models.PositiveIntegerField(default=0)

    class Meta:
        verbose_name = _("看板乡镇月汇总（检查量与节省）")
        verbose_name_plural = _("看板乡镇月汇总（检查量与节省）")
        constraints = [
            models.UniqueConstraint(fields=["month", "facility", "kind"], name="one_township_rollup_per_month"),
        ]

    def __str__(self) -> str:
        return f"{self.month:%Y-%m} {self.facility_id} {self.kind}"


class MonthlyTownshipTurnaround(TurnaroundFigures):
    """The monthly rows of a township and kind with their radiologists added up: the
    turnaround page's table by township. A province's monthly rows hold tens of millions
    of histogram records, one set per radiologist; merged here, a ninth of them remain.
    Only groups with a signed consult are kept."""

    month = models.DateField(help_text=_("当月第一天"))
    facility = models.ForeignKey(Facility, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=4, choices=ExamKind.choices)

    class Meta:
        verbose_name = _("看板乡镇月汇总")
        verbose_name_plural = _("看板乡镇月汇总")
        constraints = [
            models.UniqueConstraint(fields=["month", "facility", "kind"], name="one_township_turnaround_per_month"),
        ]

    def __str__(self) -> str:
        return f"{self.month:%Y-%m} {self.facility_id} {self.kind}"


class TownshipTurnaroundSpan(TurnaroundFigures):
    """The per-township months (MonthlyTownshipTurnaround) of a township and kind added up
    over a calendar year, or over every month (`year` None): the turnaround page's table
    by township over whole years, or over all time (the page's default), reads a row a
    township instead of one a month. A province's 1,100 townships x 45 months held 15 M
    histogram records; a township's months merged hold a fraction of theirs, since its
    consults fall in the same bins month after month. Only groups with a signed consult."""

    year = models.PositiveSmallIntegerField(null=True, blank=True, help_text=_("留空表示全部月份"))
    facility = models.ForeignKey(Facility, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=4, choices=ExamKind.choices)

    class Meta:
        verbose_name = _("看板乡镇年度汇总")
        verbose_name_plural = _("看板乡镇年度汇总")
        constraints = [
            models.UniqueConstraint(
                fields=["year", "facility", "kind"], condition=Q(year__isnull=False), name="one_township_year"
            ),
            models.UniqueConstraint(
                fields=["facility", "kind"], condition=Q(year__isnull=True), name="one_township_all_time"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.year or 'all'} {self.facility_id} {self.kind}"


class MonthlyReaderTurnaround(TurnaroundFigures):
    """The monthly rows of a radiologist and kind with every township added up: the
    turnaround page's table by radiologist, and (adding up the radiologists) its total and
    its tables by kind and by period. Only groups with a signed consult are kept."""

    month = models.DateField(help_text=_("当月第一天"))
    radiologist = models.ForeignKey(
        "facilities.User", on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    kind = models.CharField(max_length=4, choices=ExamKind.choices)
    # As RollupFigures': the workload page's nights and weekends by radiologist and month.
    signed_weekend = models.PositiveIntegerField(default=0)
    weekday_signing = models.BinaryField(default=b"")

    class Meta:
        verbose_name = _("看板医师月汇总")
        verbose_name_plural = _("看板医师月汇总")
        indexes = [models.Index(fields=["month"], name="reader_turnaround_month")]
        constraints = [
            models.UniqueConstraint(
                fields=["month", "radiologist", "kind"],
                condition=Q(radiologist__isnull=False),
                name="one_reader_turnaround_per_month",
            ),
            models.UniqueConstraint(
                fields=["month", "kind"],
                condition=Q(radiologist__isnull=True),
                name="one_unread_turnaround_per_month",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.month:%Y-%m} {self.radiologist_id} {self.kind}"


class BilledPatients(models.Model):
    """The patients of the exams billed (original ledger entries not reversed) at one
    township: in one month and exam kind, or over every month (`month` None) of one kind
    or of every kind (`kind` ""). Patients cannot be added up across months or kinds (a
    patient who comes back counts once), so each row keeps its patients' keys, sorted and
    distinct, as little-endian int64 (`keys`): the patient's id, or minus the consult's id
    for an exam with no archived study (a patient of its own); `patients` is their number.
    A range of months is the union of its rows' keys; all time is one row a township.
    Derived data, recomputed with the rollup's months (billing.rollup.refresh_patients)."""

    month = models.DateField(null=True, blank=True, help_text=_("当月第一天；留空表示全部月份"))
    facility = models.ForeignKey(Facility, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=4, blank=True, help_text=_("留空表示全部检查类型"))
    patients = models.PositiveIntegerField(default=0)
    keys = models.BinaryField(default=b"")

    class Meta:
        verbose_name = _("看板乡镇患者汇总")
        verbose_name_plural = _("看板乡镇患者汇总")
        constraints = [
            models.UniqueConstraint(
                fields=["month", "facility", "kind"], condition=Q(month__isnull=False), name="one_patient_set_a_month"
            ),
            models.UniqueConstraint(
                fields=["facility", "kind"], condition=Q(month__isnull=True), name="one_patient_set_all_time"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.month or 'all'} {self.facility_id} {self.kind or '*'}: {self.patients}"


class RollupCursor(models.Model):
    """A named row to lock (`billing.rollup.GRAIN_LOCK`: refreshes of the per-radiologist
    months take turns on it). It once also held how far the rollup had followed the audit
    trail; the rollup now follows consults' change feed (billing 0010)."""

    name = models.CharField(max_length=32, unique=True)
    last_event_id = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.name}: {self.last_event_id}"


class MonthlyReport(models.Model):
    """A printed one-page monthly report (月报, PDF): made on the 1st of each month for the
    month before by the periodic task, or on demand by an administrator; kept as printed,
    so what was handed to the health commission can be downloaded again unchanged."""

    class Trigger(models.TextChoices):
        SCHEDULE = "schedule", _("定时生成")
        DEMAND = "demand", _("手动生成")

    uuid = models.UUIDField(_("标识"), default=uuid.uuid4, unique=True, editable=False)
    month = models.DateField(_("月份"), help_text=_("当月第一天"))
    trigger = models.CharField(_("生成方式"), max_length=16, choices=Trigger.choices)
    made_at = models.DateTimeField(_("生成时间"), default=timezone.now)
    made_by = models.ForeignKey(
        "facilities.User", on_delete=models.PROTECT, null=True, blank=True, related_name="+", verbose_name=_("生成人")
    )
    language = models.CharField(_("语言"), max_length=8)
    pdf = models.BinaryField(_("PDF"))
    size = models.PositiveIntegerField(_("大小（字节）"))
    sha256 = models.CharField(_("SHA-256"), max_length=64)
    # The headline figures as printed, for the list of reports.
    figures = models.JSONField(_("主要指标"), default=dict)

    class Meta:
        verbose_name = _("月报")
        verbose_name_plural = _("月报")
        ordering = ["-month", "-made_at"]
        constraints = [
            # The periodic task makes one a month, however often it runs or however many
            # workers run it; on demand, as many as asked for.
            models.UniqueConstraint(
                fields=["month"], condition=Q(trigger="schedule"), name="one_scheduled_report_a_month"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.month:%Y-%m} ({self.get_trigger_display()})"

    @property
    def filename(self) -> str:
        return f"yunying-monthly-{self.month:%Y-%m}.pdf"
