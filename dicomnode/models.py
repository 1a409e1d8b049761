"""The receiver's own record: one row per association, accepted or rejected."""

from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from facilities.models import Modality


class AssociationLog(models.Model):
    """One association as the receiver saw it: who called, from where, what it sent and
    how it ended. Written once, when the association ends or is rejected; the counts are
    kept in memory while it runs, so storing an instance never writes here."""

    class Outcome(models.TextChoices):
        RELEASED = "released", _("正常释放")
        ABORTED = "aborted", _("中止")
        REJECTED = "rejected", _("拒绝")

    # Given when the association starts, so that what happens during it (an instance
    # refused as an ingest conflict) can point at the row written when it ends.
    uuid = models.UUIDField(_("连接 UUID"), default=uuid.uuid4, unique=True, editable=False)
    calling_ae_title = models.CharField(_("发起方 AE"), max_length=16)
    called_ae_title = models.CharField(_("被叫 AE"), max_length=16)
    peer_address = models.GenericIPAddressField(_("对端地址"), null=True, blank=True)
    peer_port = models.PositiveIntegerField(_("对端端口"), null=True, blank=True)
    # SET_NULL: the calling AE title above still says who it was.
    modality = models.ForeignKey(
        Modality,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("检查设备"),
    )
    outcome = models.CharField(_("结果"), max_length=16, choices=Outcome.choices)
    reason = models.CharField(_("原因"), max_length=255, blank=True)
    tls = models.BooleanField(_("TLS 加密"), default=False)
    started_at = models.DateTimeField(_("开始时间"), default=timezone.now, db_index=True)
    ended_at = models.DateTimeField(_("结束时间"), null=True, blank=True)
    instances_stored = models.PositiveIntegerField(_("已存储"), default=0)
    instances_duplicate = models.PositiveIntegerField(_("重复"), default=0)
    # Refused for an identity conflict or a correction the overwrite policy refuses.
    instances_conflict = models.PositiveIntegerField(_("冲突"), default=0)
    instances_failed = models.PositiveIntegerField(_("失败"), default=0)
    bytes_received = models.PositiveBigIntegerField(_("接收字节数"), default=0)
    echoes = models.PositiveIntegerField(_("C-ECHO 次数"), default=0)

    class Meta:
        verbose_name = _("DICOM 连接记录")
        verbose_name_plural = _("DICOM 连接记录")
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"{self.started_at:%Y-%m-%d %H:%M:%S} {self.calling_ae_title} {self.get_outcome_display()}"
