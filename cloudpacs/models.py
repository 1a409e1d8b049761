"""The archive's index: patients, studies, series and instances.

The files themselves live under STORAGE_ROOT exactly as received; these rows say where
each one is and carry the tags that a worklist and a DICOMweb search match on. A
patient's identity is scoped by facility, since Patient IDs collide between hospitals."""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q
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
        constraints = [
            models.UniqueConstraint(fields=["facility", "patient_id"], name="patient_id_unique_per_facility")
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
    last_received_at = models.DateTimeField(null=True, blank=True, db_index=True)
    arrived_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("检查")
        verbose_name_plural = _("检查")
        indexes = [
            models.Index(fields=["facility", "-study_date", "-study_time", "-id"], name="study_facility_order"),
            # QIDO-RS's order (newest first), in all townships and in one: a page, even
            # at a deep offset, is a walk along one of these with no sort.
            models.Index(fields=["-study_date", "-study_time", "-id"], name="study_order"),
            models.Index(fields=["accession_number"], name="study_accession"),
            models.Index(fields=["status", "last_received_at"], name="study_stability"),
        ]

    def __str__(self) -> str:
        return f"{self.study_uid} {self.description}"


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
    number_of_instances = models.PositiveIntegerField(default=0)

    class Meta:
        verbose_name = _("序列")
        verbose_name_plural = _("序列")
        ordering = ["series_number", "id"]

    def __str__(self) -> str:
        return f"{self.series_uid} {self.modality} {self.description}"


class Instance(models.Model):
    sop_instance_uid = models.CharField(max_length=64, unique=True)
    sop_class_uid = models.CharField(max_length=64)
    series = models.ForeignKey(Series, on_delete=models.CASCADE, related_name="instances")
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

    def __str__(self) -> str:
        return self.sop_instance_uid


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
