"""The archive's index: patients, studies, series and instances.

The files themselves live under STORAGE_ROOT exactly as received; these rows say where
each one is and carry the tags that a worklist and a DICOMweb search match on. A
patient's identity is scoped by facility, since Patient IDs collide between hospitals."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from cloudpacs.personname import format_person_name
from facilities.models import Facility, Modality


class Patient(models.Model):
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    facility = models.ForeignKey(Facility, on_delete=models.PROTECT, related_name="patients", verbose_name=_("机构"))
    patient_id = models.CharField(_("患者 ID"), max_length=64)
    issuer = models.CharField(_("ID 签发者"), max_length=64, blank=True)
    # PatientName as decoded (with its character set), whole, and split into the
    # alphabetic, ideographic and phonetic groups that PN values carry (PS3.5 6.2.1).
    name = models.CharField(_("姓名"), max_length=324, blank=True)
    name_alphabetic = models.CharField(max_length=108, blank=True, db_index=True)
    name_ideographic = models.CharField(max_length=108, blank=True, db_index=True)
    name_phonetic = models.CharField(max_length=108, blank=True)
    # The name's initials in pinyin (吴^超 -> "wc"), for a search by them (cloudpacs.personname).
    name_initials = models.CharField(_("姓名首字母"), max_length=32, blank=True, db_index=True)
    birth_date = models.DateField(_("出生日期"), null=True, blank=True)
    sex = models.CharField(_("性别"), max_length=16, blank=True)

    class Meta:
        verbose_name = _("患者")
        verbose_name_plural = _("患者")
        # An empty Patient ID identifies nobody: each study without one gets a patient of
        # its own (flagged for the technologist), so the unique key skips those rows.
        constraints = [
            models.UniqueConstraint(
                fields=["facility", "patient_id"],
                condition=~Q(patient_id=""),
                name="patient_id_unique_per_facility",
            )
        ]
        # A search across townships by Patient ID, exact or by prefix (P00123*): the
        # pattern operator class lets PostgreSQL use it for LIKE 'P00123%' whatever the
        # database's collation (other databases ignore the operator class). The names'
        # indexes, on UPPER() expressions, are made by migration 0003 on PostgreSQL only.
        indexes = [models.Index(fields=["patient_id"], name="patient_id_search", opclasses=["varchar_pattern_ops"])]

    def __str__(self) -> str:
        return f"{self.display_name} ({self.patient_id})"

    @property
    def display_name(self) -> str:
        """The name as people read it, in the active language (cloudpacs.personname)."""
        return format_person_name(self)

    @property
    def has_no_id(self) -> bool:
        return not self.patient_id


class PatientIdentifier(models.Model):
    """Another identifier of a patient, from the Other Patient IDs Sequence (0010,1002): a
    value and the issuer that gave it. Where the issuer is one that every facility shares
    (settings.SHARED_PATIENT_ID_ISSUERS, a national ID), the same value and issuer in two
    facilities is the same person; a Patient ID alone never is (Patient IDs are per facility)."""

    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="identifiers")
    value = models.CharField(_("标识"), max_length=64)
    issuer = models.CharField(_("签发者"), max_length=64)

    class Meta:
        verbose_name = _("患者其他标识")
        verbose_name_plural = _("患者其他标识")
        constraints = [models.UniqueConstraint(fields=["patient", "issuer", "value"], name="patient_identifier_unique")]
        indexes = [models.Index(fields=["issuer", "value"], name="patient_identifier_lookup")]

    def __str__(self) -> str:
        return f"{self.issuer}:{self.value}"


class Study(models.Model):
    class Status(models.TextChoices):
        RECEIVING = "receiving", _("接收中")
        ARRIVED = "arrived", _("已到达")
        UPDATED = "updated", _("已更新")

    study_uid = models.CharField(_("检查 UID"), max_length=64, unique=True)
    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="studies")
    facility = models.ForeignKey(Facility, on_delete=models.PROTECT, related_name="studies")
    modality = models.ForeignKey(Modality, on_delete=models.SET_NULL, null=True, blank=True, related_name="studies")
    study_date = models.DateField(_("检查日期"), null=True, blank=True)
    study_time = models.TimeField(_("检查时间"), null=True, blank=True)
    accession_number = models.CharField(_("检查号"), max_length=64, blank=True)
    study_id = models.CharField(_("检查 ID"), max_length=16, blank=True)
    description = models.CharField(_("检查描述"), max_length=128, blank=True)
    referring_physician = models.CharField(_("申请医生"), max_length=324, blank=True)
    # Backslash-separated, as the DICOM attribute ModalitiesInStudy is.
    modalities_in_study = models.CharField(max_length=64, blank=True)
    institution_name = models.CharField(max_length=128, blank=True)
    station_name = models.CharField(max_length=64, blank=True)
    specific_character_set = models.CharField(max_length=128, blank=True)
    number_of_series = models.PositiveIntegerField(default=0)
    number_of_instances = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RECEIVING)
    first_received_at = models.DateTimeField(null=True, blank=True)
    # The counters, the last arrival and the status of a late instance are the sweep's fold
    # (cloudpacs.counts), not each instance's; readers add the instances not yet folded.
    # last_received_at is in no index: a column an index holds, changed, stops PostgreSQL
    # from updating the row in place (a HOT update).
    last_received_at = models.DateTimeField(null=True, blank=True)
    arrived_at = models.DateTimeField(null=True, blank=True)
    # PatientName as this study's images carry it. The Patient row keeps the first name
    # received under the Patient ID; a study whose name differs is flagged, never written
    # over the patient, so a wrong ID cannot rename someone else's record.
    patient_name_received = models.CharField(_("收到的姓名"), max_length=324, blank=True)
    patient_name_conflict = models.BooleanField(_("姓名与患者记录不一致"), default=False)
    # Set by the reporting side when the study's report is signed: the archive decides
    # from it what a corrected image may do, without knowing about consults.
    report_signed_at = models.DateTimeField(_("报告签发时间"), null=True, blank=True)
    # An image was replaced by a corrected one (DICOM_OVERWRITE_POLICY) ...
    images_changed_at = models.DateTimeField(_("影像更正时间"), null=True, blank=True)
    # ... or, the report being signed, a corrected one waits beside it.
    pending_corrections = models.PositiveIntegerField(_("待处理的更正影像"), default=0)

    class Meta:
        verbose_name = _("检查")
        verbose_name_plural = _("检查")
        indexes = [
            models.Index(fields=["facility", "-study_date", "-study_time", "-id"], name="study_facility_order"),
            # QIDO-RS's order (newest first), in all townships and in one: a page, even
            # at a deep offset, is a walk along one of these with no sort.
            models.Index(fields=["-study_date", "-study_time", "-id"], name="study_order"),
            models.Index(fields=["accession_number"], name="study_accession"),
            # The stability sweep's candidates: the few studies still receiving, whose
            # last_received_at it then compares (that column in no index, above).
            models.Index(fields=["id"], condition=Q(status="receiving"), name="study_receiving"),
            # A township's studies by arrival, newest first (its page's studies without a
            # consult): first_received_at is written once per study.
            models.Index(fields=["facility", "-first_received_at", "-id"], name="study_facility_arrival"),
        ]

    def __str__(self) -> str:
        return f"{self.study_uid} {self.description}"

    @property
    def patient_id_missing(self) -> bool:
        return not self.patient.patient_id


class Series(models.Model):
    series_uid = models.CharField(_("序列 UID"), max_length=64, unique=True)
    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="series")
    modality = models.CharField(_("模态"), max_length=16, blank=True, db_index=True)
    series_number = models.IntegerField(null=True, blank=True)
    description = models.CharField(max_length=128, blank=True)
    body_part_examined = models.CharField(max_length=64, blank=True)
    station_name = models.CharField(max_length=64, blank=True)
    institution_name = models.CharField(max_length=128, blank=True)
    manufacturer = models.CharField(max_length=64, blank=True)
    # The series' instances counted by the sweep's fold (cloudpacs.counts): those whose id
    # is at most counted_through. The instances after it are counted by whoever reads.
    number_of_instances = models.PositiveIntegerField(default=0)
    counted_through = models.BigIntegerField(default=0)

    class Meta:
        verbose_name = _("序列")
        verbose_name_plural = _("序列")
        ordering = ["series_number", "id"]

    def __str__(self) -> str:
        return f"{self.series_uid} {self.modality} {self.description}"


class Instance(models.Model):
    sop_instance_uid = models.CharField(max_length=64, unique=True)
    sop_class_uid = models.CharField(max_length=64)
    # Indexed with the id (Meta.indexes): a series' instances after its counted mark are a
    # range of that index (cloudpacs.counts). No database constraint: its check locked the
    # series' row at every instance's commit. The statements that write an instance read
    # its series in the same statement, and deleting a series that still has instances is
    # refused by a trigger that waits out every statement writing instances (migration 0018).
    series = models.ForeignKey(
        Series, on_delete=models.CASCADE, related_name="instances", db_index=False, db_constraint=False
    )
    instance_number = models.IntegerField(null=True, blank=True)
    transfer_syntax_uid = models.CharField(max_length=64)
    # Relative to STORAGE_ROOT; the file is the Part 10 file as received.
    storage_key = models.CharField(max_length=255, unique=True)
    size = models.PositiveBigIntegerField()
    sha256 = models.CharField(max_length=64)
    rows = models.PositiveIntegerField(null=True, blank=True)
    columns = models.PositiveIntegerField(null=True, blank=True)
    number_of_frames = models.PositiveIntegerField(null=True, blank=True)
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("图像")
        verbose_name_plural = _("图像")
        ordering = ["instance_number", "id"]
        constraints = [models.CheckConstraint(condition=Q(size__gt=0), name="instance_size_positive")]
        indexes = [models.Index(fields=["series", "id"], name="instance_series_order")]

    def __str__(self) -> str:
        return self.sop_instance_uid


class InstanceCountMark(models.Model):
    """How far the sweep has folded the instance counters (cloudpacs.counts.fold): every
    instance whose id is at most `through` is counted in its series' and its study's stored
    number_of_instances. One row."""

    through = models.BigIntegerField(default=0)

    class Meta:
        verbose_name = _("图像计数进度")
        verbose_name_plural = _("图像计数进度")

    def __str__(self) -> str:
        return f"instances counted through {self.through}"


class InstanceMetadata(models.Model):
    """An instance's WADO-RS metadata (PS3.18 F.2), computed once from its file: the
    DICOM JSON text with every BulkDataURI relative to the instance's URL ("bulkdata/
    7FE00010"), which a request makes absolute. Instances are immutable, so this is never
    invalidated; a series' /metadata is then one query and a concatenation."""

    instance = models.OneToOneField(Instance, on_delete=models.CASCADE, primary_key=True, related_name="metadata")
    document = models.TextField()

    class Meta:
        verbose_name = _("图像元数据")
        verbose_name_plural = _("图像元数据")

    def __str__(self) -> str:
        return f"metadata of {self.instance_id}"


class UnsyncedFile(models.Model):
    """An instance whose index row was committed while its file's fsync was still under
    way (cloudpacs.services._store: the commit and the fsync run at once, Success is
    answered after both). Written in the row's own statement and removed, a few at a
    time, once the fsync has returned: a row left here by a crash or a power cut names a
    file that may be missing, empty or short, and the next start of the receiver checks
    it (cloudpacs.services.resolve_unsynced_files). No database constraint: the
    statement that inserts it is the hottest in the archive."""

    instance = models.OneToOneField(
        Instance, on_delete=models.CASCADE, primary_key=True, db_constraint=False, related_name="+"
    )

    class Meta:
        verbose_name = _("待同步的图像文件")
        verbose_name_plural = _("待同步的图像文件")

    def __str__(self) -> str:
        return f"file of {self.instance_id} not yet known durable"


class BodyPart(models.Model):
    """The one vocabulary of body parts: what an order selects, what a consult counts and the
    ledger bills per part, and what the reading page and the dashboards name. Each part says
    which DICOM BodyPartExamined values (PS3.16 CID 4031 code values) it stands for and
    which exam kinds it applies to. The rows are data, shipped and changed by migrations."""

    code = models.CharField(_("代码"), max_length=16, unique=True)
    name_zh = models.CharField(_("中文名称"), max_length=32)
    name_en = models.CharField(_("英文名称"), max_length=64)
    # Backslash-separated, as multi-valued DICOM strings are: "CSPINE\NECK".
    dicom_values = models.CharField(_("BodyPartExamined 取值"), max_length=128)
    kinds = models.CharField(_("适用检查类型"), max_length=16, help_text=_("如 CT\\DR"))
    sort_order = models.PositiveSmallIntegerField(_("排序"), default=0)
    is_active = models.BooleanField(_("启用"), default=True)

    class Meta:
        verbose_name = _("检查部位")
        verbose_name_plural = _("检查部位")
        ordering = ["sort_order", "code"]

    def __str__(self) -> str:
        return f"{self.name_zh} ({self.code})"

    @property
    def dicom_value_list(self) -> list[str]:
        return [value for value in self.dicom_values.split("\\") if value]

    @property
    def kind_list(self) -> list[str]:
        return [kind for kind in self.kinds.split("\\") if kind]

    def name(self, language: str = "zh-hans") -> str:
        return self.name_en if language.lower().startswith("en") else self.name_zh


class OrderPriority(models.TextChoices):
    # The same values as the consult's priority, which takes it from the order.
    ROUTINE = "routine", _("常规")
    URGENT = "urgent", _("加急")
    EMERGENCY = "emergency", _("急诊")


class Order(models.Model):
    """A scheduled exam (检查申请): registered at the township, offered to its console on the
    Modality Worklist with its accession number, and linked to the study that comes back."""

    class Status(models.TextChoices):
        SCHEDULED = "scheduled", _("已预约")
        IN_PROGRESS = "in_progress", _("检查中")
        COMPLETED = "completed", _("已完成")
        CANCELLED = "cancelled", _("已取消")

    class Match(models.TextChoices):
        ACCESSION = "accession", _("按检查号")
        PATIENT_DATE = "patient_date", _("按患者 ID 与日期")

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    facility = models.ForeignKey(Facility, on_delete=models.PROTECT, related_name="orders", verbose_name=_("机构"))
    modality = models.ForeignKey(Modality, on_delete=models.PROTECT, related_name="orders", verbose_name=_("检查设备"))
    kind = models.CharField(_("检查类型"), max_length=4)
    # Issued by the platform, unique across townships (DICOM AccessionNumber, SH, 16 chars).
    accession_number = models.CharField(_("检查号"), max_length=16, unique=True)
    # Given to the console on the worklist, so the images carry it too.
    study_instance_uid = models.CharField(_("检查 UID"), max_length=64, unique=True)
    patient_id = models.CharField(_("患者 ID"), max_length=64)
    patient_name = models.CharField(_("患者姓名"), max_length=64)
    patient_name_pinyin = models.CharField(_("姓名拼音"), max_length=64, blank=True)
    patient_sex = models.CharField(_("性别"), max_length=1, blank=True)
    patient_birth_date = models.DateField(_("出生日期"), null=True, blank=True)
    body_parts = models.ManyToManyField(BodyPart, related_name="orders", verbose_name=_("检查部位"))
    priority = models.CharField(
        _("优先级"), max_length=16, choices=OrderPriority.choices, default=OrderPriority.ROUTINE
    )
    clinical_history = models.TextField(_("病史摘要"), blank=True)
    question = models.TextField(_("会诊目的"), blank=True)
    scheduled_at = models.DateTimeField(_("预约时间"))
    status = models.CharField(_("状态"), max_length=16, choices=Status.choices, default=Status.SCHEDULED)
    study = models.OneToOneField(
        Study, on_delete=models.SET_NULL, null=True, blank=True, related_name="order", verbose_name=_("检查")
    )
    matched_by = models.CharField(_("关联方式"), max_length=16, choices=Match.choices, blank=True)
    # A link by patient ID and date is a guess until the technologist confirms it.
    match_confirmed_at = models.DateTimeField(_("关联确认时间"), null=True, blank=True)
    created_by = models.ForeignKey(
        "facilities.User", on_delete=models.PROTECT, null=True, blank=True, related_name="+", verbose_name=_("登记人")
    )
    created_at = models.DateTimeField(_("登记时间"), default=timezone.now)
    cancelled_at = models.DateTimeField(_("取消时间"), null=True, blank=True)

    class Meta:
        verbose_name = _("检查申请")
        verbose_name_plural = _("检查申请")
        ordering = ["scheduled_at", "id"]
        indexes = [
            models.Index(fields=["facility", "status", "scheduled_at"], name="order_worklist"),
            models.Index(fields=["facility", "patient_id"], name="order_patient"),
        ]

    def __str__(self) -> str:
        return f"{self.accession_number} {self.patient_name} {self.kind}"

    @property
    def needs_confirmation(self) -> bool:
        return self.matched_by == self.Match.PATIENT_DATE and self.match_confirmed_at is None

    @property
    def is_open(self) -> bool:
        """Not yet performed: on the worklist, and still cancellable."""
        return self.status in (self.Status.SCHEDULED, self.Status.IN_PROGRESS) and self.study_id is None


class PerformedProcedureStep(models.Model):
    """One Modality Performed Procedure Step (PS3.4 F.7) a console reported: created IN
    PROGRESS, then COMPLETED or DISCONTINUED. A completed step whose referenced images are
    all stored makes their study arrive at once, without waiting for it to be quiet."""

    class Status(models.TextChoices):
        IN_PROGRESS = "IN PROGRESS", _("进行中")
        COMPLETED = "COMPLETED", _("已完成")
        DISCONTINUED = "DISCONTINUED", _("已中止")

    sop_instance_uid = models.CharField(max_length=64, unique=True)
    facility = models.ForeignKey(Facility, on_delete=models.PROTECT, related_name="+")
    modality = models.ForeignKey(Modality, on_delete=models.PROTECT, related_name="+")
    order = models.ForeignKey(Order, on_delete=models.SET_NULL, null=True, blank=True, related_name="performed_steps")
    status = models.CharField(max_length=16, choices=Status.choices)
    accession_number = models.CharField(max_length=64, blank=True)
    study_instance_uid = models.CharField(max_length=64, blank=True)
    # SOP Instance UIDs of the images the step produced (Performed Series Sequence).
    referenced_instances = models.JSONField(default=list, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    # Completed, with images the sweep is still waiting for.
    awaiting_images = models.BooleanField(default=False, db_index=True)

    class Meta:
        verbose_name = _("执行步骤 (MPPS)")
        verbose_name_plural = _("执行步骤 (MPPS)")

    def __str__(self) -> str:
        return f"{self.sop_instance_uid} {self.status}"


class Heartbeat(models.Model):
    """The last sign of life of one part of the platform (the web server, the receiver, a
    worker, beat or the ticker) on one host: each writes its row every HEARTBEAT_SECONDS,
    so the administrators' status page knows what runs without asking a parent process,
    as under docker-compose, where there is none."""

    part = models.CharField(_("组件"), max_length=32)
    host = models.CharField(_("主机"), max_length=255)
    pid = models.PositiveIntegerField(_("进程号"))
    started_at = models.DateTimeField(_("启动时间"))
    at = models.DateTimeField(_("最近心跳"))
    detail = models.CharField(_("说明"), max_length=255, blank=True)

    class Meta:
        verbose_name = _("心跳")
        verbose_name_plural = _("心跳")
        constraints = [models.UniqueConstraint(fields=["part", "host"], name="heartbeat_one_per_part_and_host")]

    def __str__(self) -> str:
        return f"{self.part}@{self.host} ({self.pid})"


class InstanceVersion(models.Model):
    """Another content of an indexed SOP Instance UID, received as a correction: a prior
    version that a correction replaced (the file stays in the store), or, once the
    study's report was signed, a pending correction kept beside the images the report
    was read from."""

    class State(models.TextChoices):
        PRIOR = "prior", _("已被替换的旧版本")
        PENDING = "pending", _("待处理的更正")

    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="versions")
    state = models.CharField(_("状态"), max_length=16, choices=State.choices)
    storage_key = models.CharField(max_length=255, db_index=True)
    sha256 = models.CharField(max_length=64)
    size = models.PositiveBigIntegerField()
    transfer_syntax_uid = models.CharField(max_length=64)
    # The modality that sent the content this row describes (the new one for a pending
    # correction, the replaced one for a prior version is not known: the sender of the study).
    source_ae = models.CharField(_("发送设备 AE"), max_length=16, blank=True)
    received_at = models.DateTimeField(_("接收时间"))

    class Meta:
        verbose_name = _("图像版本")
        verbose_name_plural = _("图像版本")
        ordering = ["received_at", "id"]

    def __str__(self) -> str:
        return f"{self.instance_id} {self.state} {self.sha256[:16]}"


class IngestConflict(models.Model):
    """An instance refused because storing it would have mixed identities: a study or
    series of another facility, a series of another study, another patient under the
    study, or a correction the overwrite policy does not allow. Nothing of it was stored;
    this row is what administrators see of it. `association` is the receiver's opaque
    reference to its association log row (None for STOW-RS)."""

    class Reason(models.TextChoices):
        STUDY_OF_ANOTHER_FACILITY = "study_facility", _("检查属于其他机构")
        SERIES_OF_ANOTHER_FACILITY = "series_facility", _("序列属于其他机构")
        SERIES_OF_ANOTHER_STUDY = "series_study", _("序列属于其他检查")
        PATIENT_MISMATCH = "patient", _("患者身份与检查不符")
        INSTANCE_ELSEWHERE = "instance_elsewhere", _("图像 UID 已存于其他检查")
        CORRECTION_REFUSED = "correction", _("更正图像未被接受")

    class Channel(models.TextChoices):
        DIMSE = "dimse", "DICOM C-STORE"
        STOW = "stow", "STOW-RS"

    at = models.DateTimeField(_("时间"), db_index=True)
    reason = models.CharField(_("原因"), max_length=24, choices=Reason.choices)
    channel = models.CharField(_("途径"), max_length=8, choices=Channel.choices)
    facility = models.ForeignKey(Facility, on_delete=models.PROTECT, related_name="+", verbose_name=_("发送机构"))
    modality = models.ForeignKey(
        Modality, on_delete=models.SET_NULL, null=True, blank=True, related_name="+", verbose_name=_("检查设备")
    )
    ae_title = models.CharField(_("发送设备 AE"), max_length=16, blank=True)
    # Who stored it over STOW-RS.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("用户"),
    )
    association = models.UUIDField(_("连接记录"), null=True, blank=True, db_index=True)
    sop_instance_uid = models.CharField(_("图像 UID"), max_length=64)
    study_uid = models.CharField(_("检查 UID"), max_length=64)
    series_uid = models.CharField(_("序列 UID"), max_length=64)
    patient_id = models.CharField(_("收到的患者 ID"), max_length=64, blank=True)
    # For administrators: what the archive holds under those UIDs (it may name the other
    # facility; the sender's answer never does).
    detail = models.CharField(_("详情"), max_length=255, blank=True)

    class Meta:
        verbose_name = _("接收冲突")
        verbose_name_plural = _("接收冲突")
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.ae_title} {self.get_reason_display()}"
