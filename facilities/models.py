"""Who takes part: the county hospital and the township health centres, their imaging
machines (each known to the receiver by its AE title), the people and their roles, the
reading roster, and the audit trail that records what each of them did."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import get_language
from django.utils.translation import gettext_lazy as _
from knox.models import AbstractAuthToken, AuthTokenManager

# AE titles: 1-16 characters of the DICOM default repertoire without backslash or
# control characters (PS3.5 6.2). Leading and trailing spaces are not significant, so
# the stored title never carries them.
ae_title_validator = RegexValidator(
    r"^[\x21-\x5b\x5d-\x7e]([\x20-\x5b\x5d-\x7e]{0,14}[\x21-\x5b\x5d-\x7e])?$",
    _("An AE title has 1 to 16 printable ASCII characters and no backslash."),
)


class Facility(models.Model):
    class Kind(models.TextChoices):
        COUNTY_HOSPITAL = "county", _("县医院")
        TOWNSHIP_CENTRE = "township", _("乡镇卫生院")

    class Level(models.IntegerChoices):
        # Hospital grade under the national scheme; prices depend on it.
        FIRST = 1, _("一级")
        SECOND = 2, _("二级")
        THIRD = 3, _("三级")

    uuid = models.UUIDField(_("标识"), default=uuid.uuid4, unique=True, editable=False)
    code = models.SlugField(_("代码"), max_length=32, unique=True, help_text=_("短代码，如 XUANWO"))
    name = models.CharField(_("名称"), max_length=100)
    name_en = models.CharField(
        _("英文名称"),
        max_length=100,
        blank=True,
        help_text=_("英文页面上的名称，如 Xuanwo Central Township Health Centre；留空时英文页面也显示中文名称"),
    )
    short_name = models.CharField(_("简称"), max_length=32, help_text=_("如 漩涡"))
    pinyin = models.CharField(_("拼音"), max_length=64, help_text=_("如 Xuanwo"))
    kind = models.CharField(_("类型"), max_length=16, choices=Kind.choices)
    level = models.PositiveSmallIntegerField(_("医院等级"), choices=Level.choices)
    is_active = models.BooleanField(_("启用"), default=True)
    # Delivery preferences for reports and critical-finding alerts.
    alert_email = models.EmailField(_("危急值通知邮箱"), blank=True)
    requires_second_signature = models.BooleanField(
        _("报告需审核"), default=False, help_text=_("初诊后须由上级医师审核方可签发")
    )
    # What a patient of a township saves in travel by being examined at home instead of at
    # the county hospital: the administrators' reports multiply it by the exams billed.
    county_distance_km = models.DecimalField(
        _("距县医院（公里）"),
        max_digits=6,
        decimal_places=1,
        null=True,
        blank=True,
        validators=[MinValueValidator(0)],
        help_text=_("单程道路里程；留空表示未知"),
    )
    round_trip_cost = models.DecimalField(
        _("往返路费（元）"),
        max_digits=8,
        decimal_places=2,
        null=True,
        blank=True,
        validators=[MinValueValidator(0)],
        help_text=_("一名患者往返县医院的车费"),
    )
    round_trip_minutes = models.PositiveIntegerField(
        _("往返路上时间（分钟）"), null=True, blank=True, help_text=_("一名患者往返县医院路上所用时间")
    )
    travel_source = models.CharField(
        _("路程数据来源"),
        max_length=500,
        blank=True,
        help_text=_("里程、路费和时间的出处；没有出处时写明“估算”及估算方法"),
    )

    class Meta:
        verbose_name = _("医疗机构")
        verbose_name_plural = _("医疗机构")
        ordering = ["kind", "pinyin"]

    def __str__(self) -> str:
        # In the active language: the admin's lists and the pages' choice lists name it so.
        return self.name_in()

    def name_in(self, language: str | None = None) -> str:
        """The full name in `language` (the active one when not given): the English name
        on English pages where there is one, else the Chinese name."""
        if (language or get_language() or "").startswith("en") and self.name_en:
            return self.name_en
        return self.name

    def short_name_in(self, language: str | None = None) -> str:
        """The short name in `language` (the active one when not given): the pinyin on
        English pages (Xuanwo for 漩涡), else the short name."""
        if (language or get_language() or "").startswith("en") and self.pinyin:
            return self.pinyin
        return self.short_name or self.name

    @property
    def is_township(self) -> bool:
        return self.kind == self.Kind.TOWNSHIP_CENTRE


class ExamKind(models.TextChoices):
    """What the ledger and the dashboards count. A modality produces one kind."""

    CT = "CT", _("CT")
    DR = "DR", _("DR")


class Modality(models.Model):
    facility = models.ForeignKey(Facility, on_delete=models.PROTECT, related_name="modalities", verbose_name=_("机构"))
    kind = models.CharField(_("检查类型"), max_length=4, choices=ExamKind.choices)
    manufacturer = models.CharField(_("厂商"), max_length=64, blank=True)
    model_name = models.CharField(_("型号"), max_length=64, blank=True)
    ae_title = models.CharField(_("AE 标题"), max_length=16, unique=True, validators=[ae_title_validator])
    # Where the platform sends things back (reports as Encapsulated PDF), and the address
    # the receiver may require associations to come from.
    host = models.CharField(_("主机地址"), max_length=255, blank=True)
    port = models.PositiveIntegerField(
        _("端口"), null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(65535)]
    )
    is_active = models.BooleanField(_("启用"), default=True)

    class Meta:
        verbose_name = _("检查设备")
        verbose_name_plural = _("检查设备")
        ordering = ["facility__pinyin", "kind"]

    def __str__(self) -> str:
        return f"{self.ae_title} ({self.facility.short_name_in()} {self.kind})"

    def save(self, *args: Any, **kwargs: Any) -> None:
        """A console is an application entity too: saving the equipment record keeps its
        entity's AE title, facility, address and state in step (created the first time
        with a console's permissions: store and query), so the association policy has
        one registry to ask and the console's title is written in one place."""
        with transaction.atomic():
            super().save(*args, **kwargs)
            entity = ApplicationEntity.objects.filter(modality=self).first()
            if entity is None:
                entity = ApplicationEntity(
                    modality=self, role=ApplicationEntity.Role.CONSOLE, may_store=True, may_query=True
                )
            entity.ae_title = self.ae_title
            entity.facility_id = self.facility_id
            entity.host = self.host
            entity.port = self.port
            entity.is_active = self.is_active
            entity.save()

    def clean(self) -> None:
        self.ae_title = self.ae_title.strip().upper()
        taken = ApplicationEntity.objects.filter(ae_title=self.ae_title)
        if self.pk is not None:
            taken = taken.exclude(modality_id=self.pk)
        if taken.exists():
            raise ValidationError({"ae_title": _("该 AE 标题已登记给另一个应用实体。")})


class ApplicationEntity(models.Model):
    """A DICOM application entity the county registers: who may open an association with
    the receiver, and for what. Each console (a Modality) has one, kept in step by the
    modality; workstations and archives are registered here alone."""

    class Role(models.TextChoices):
        CONSOLE = "console", _("检查设备")
        WORKSTATION = "workstation", _("工作站")
        ARCHIVE = "archive", _("影像归档 (PACS)")

    ae_title = models.CharField(_("AE 标题"), max_length=16, unique=True, validators=[ae_title_validator])
    role = models.CharField(_("角色"), max_length=16, choices=Role.choices)
    facility = models.ForeignKey(
        Facility, on_delete=models.PROTECT, related_name="application_entities", verbose_name=_("机构")
    )
    # A console's equipment record; its AE title, facility, host, port and state come
    # from there.
    modality = models.OneToOneField(
        Modality,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="application_entity",
        verbose_name=_("检查设备"),
    )
    description = models.CharField(_("说明"), max_length=128, blank=True, help_text=_("如 放射科阅片工作站 1"))
    host = models.CharField(_("主机地址"), max_length=255, blank=True)
    port = models.PositiveIntegerField(
        _("端口"), null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(65535)]
    )
    may_store = models.BooleanField(_("可发送影像"), default=False, help_text=_("C-STORE、MPPS 与存储确认"))
    may_query = models.BooleanField(_("可查询"), default=False, help_text=_("C-FIND：检查查询与工作列表"))
    may_retrieve = models.BooleanField(_("可调阅"), default=False, help_text=_("C-MOVE 与 C-GET"))
    is_move_destination = models.BooleanField(
        _("可作为 C-MOVE 目的地"), default=False, help_text=_("须填写主机地址与端口")
    )
    is_active = models.BooleanField(_("启用"), default=True)

    class Meta:
        verbose_name = _("DICOM 应用实体")
        verbose_name_plural = _("DICOM 应用实体")
        ordering = ["facility__pinyin", "ae_title"]

    def __str__(self) -> str:
        return f"{self.ae_title} ({self.facility.short_name_in()} {self.get_role_display()})"

    def clean(self) -> None:
        self.ae_title = self.ae_title.strip().upper()
        errors: dict[str, Any] = {}
        if self.role == self.Role.CONSOLE and self.modality_id is None:
            errors["role"] = _("检查设备的应用实体由“检查设备”登记。")
        if self.role != self.Role.CONSOLE and self.modality_id is not None:
            errors["role"] = _("关联检查设备的应用实体角色须为检查设备。")
        if self.may_store and self.modality_id is None:
            # Every stored study is filed under the console that sent it.
            errors["may_store"] = _("只有检查设备可发送影像。")
        if self.is_move_destination and (not self.host or not self.port):
            errors["is_move_destination"] = _("C-MOVE 目的地须有主机地址与端口。")
        if errors:
            raise ValidationError(errors)

    @property
    def is_console(self) -> bool:
        return self.role == self.Role.CONSOLE

    @property
    def network_address(self) -> tuple[str, int | None]:
        """Where the entity listens (and, with DICOM_CHECK_PEER_ADDRESS, the host it must
        call from): a console's are its modality's."""
        if self.modality is not None:
            return self.modality.host, self.modality.port
        return self.host, self.port


# The type checker cannot build the manager of ApiToken's relation (knox is untyped).
class User(AbstractUser):  # type: ignore[django-manager-missing]
    class Role(models.TextChoices):
        TECHNOLOGIST = "technologist", _("技师")
        RADIOLOGIST = "radiologist", _("诊断医师")
        ADMINISTRATOR = "administrator", _("管理员")

    uuid = models.UUIDField(_("标识"), default=uuid.uuid4, unique=True, editable=False)
    role = models.CharField(_("角色"), max_length=16, choices=Role.choices)
    facility = models.ForeignKey(
        Facility, on_delete=models.PROTECT, null=True, blank=True, related_name="users", verbose_name=_("所属机构")
    )
    display_name = models.CharField(_("姓名"), max_length=64, blank=True)
    # Radiologists: what they may read, and whether they may give the final signature (审核).
    reads_ct = models.BooleanField(_("可阅 CT"), default=False)
    reads_dr = models.BooleanField(_("可阅 DR"), default=False)
    is_senior = models.BooleanField(_("上级医师"), default=False, help_text=_("可审核签发报告"))

    class Meta:
        verbose_name = _("用户")
        verbose_name_plural = _("用户")
        constraints = [
            models.CheckConstraint(
                condition=~Q(role="technologist") | Q(facility__isnull=False),
                name="technologist_has_facility",
                violation_error_message=_("技师必须属于一个机构。"),
            ),
        ]

    def __str__(self) -> str:
        return self.display_name or self.username

    def get_short_name(self) -> str:
        # The Django admin greets by it (欢迎，汉阴县人民医院信息科), not by the username.
        return self.display_name or self.first_name or self.username

    def clean(self) -> None:
        super().clean()
        if self.role == self.Role.TECHNOLOGIST and self.facility_id is None:
            raise ValidationError({"facility": _("技师必须属于一个机构。")})

    def save(self, *args: Any, **kwargs: Any) -> None:
        # set_password() leaves the new password in _password until the save; a hash
        # upgrade at login clears it first, so only a real change revokes the tokens.
        password_changed = getattr(self, "_password", None) is not None
        super().save(*args, **kwargs)
        if password_changed:
            ApiToken.objects.revoke_all(self, reason="password_changed")
        elif not self.is_active:
            ApiToken.objects.revoke_all(self, reason="deactivated")

    @property
    def is_technologist(self) -> bool:
        return self.role == self.Role.TECHNOLOGIST

    @property
    def is_radiologist(self) -> bool:
        return self.role == self.Role.RADIOLOGIST

    @property
    def is_administrator(self) -> bool:
        return self.role == self.Role.ADMINISTRATOR

    def can_read(self, kind: str) -> bool:
        return self.is_radiologist and (
            (kind == ExamKind.CT and self.reads_ct) or (kind == ExamKind.DR and self.reads_dr)
        )


class RosterShift(models.Model):
    """A radiologist on duty from one time to another. The duty lead takes escalations."""

    radiologist = models.ForeignKey(
        User,
        on_delete=models.CASCADE,
        related_name="shifts",
        limit_choices_to={"role": User.Role.RADIOLOGIST},
        verbose_name=_("诊断医师"),
    )
    starts_at = models.DateTimeField(_("开始"))
    ends_at = models.DateTimeField(_("结束"))
    is_lead = models.BooleanField(_("值班组长"), default=False)

    class Meta:
        verbose_name = _("排班")
        verbose_name_plural = _("排班")
        ordering = ["starts_at"]
        indexes = [models.Index(fields=["starts_at", "ends_at"])]
        constraints = [
            models.CheckConstraint(
                condition=Q(ends_at__gt=models.F("starts_at")),
                name="shift_ends_after_it_starts",
                violation_error_message=_("排班结束时间必须晚于开始时间。"),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.radiologist} {self.starts_at:%Y-%m-%d %H:%M}–{self.ends_at:%H:%M}"

    def covers(self, moment: datetime) -> bool:
        return self.starts_at <= moment < self.ends_at


class AuditEventQuerySet(models.QuerySet["AuditEvent"]):
    def update(self, **kwargs: object) -> int:
        raise ValidationError("audit events are append-only")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise ValidationError("audit events are append-only")


class AuditEvent(models.Model):
    """One thing someone did: who, when, from where, to what. Written, never changed."""

    at = models.DateTimeField(_("时间"), default=timezone.now, db_index=True)
    # PROTECT: a user with a history is deactivated, never deleted.
    actor = models.ForeignKey(
        User, on_delete=models.PROTECT, null=True, blank=True, related_name="+", verbose_name=_("用户")
    )
    actor_name = models.CharField(_("用户名"), max_length=150, blank=True)
    action = models.CharField(_("操作代码"), max_length=64, db_index=True)
    address = models.GenericIPAddressField(_("地址"), null=True, blank=True)
    object_type = models.CharField(_("对象类型"), max_length=64, blank=True)
    object_id = models.CharField(_("对象标识"), max_length=128, blank=True, db_index=True)
    facility = models.ForeignKey(
        Facility, on_delete=models.PROTECT, null=True, blank=True, related_name="+", verbose_name=_("机构")
    )
    detail = models.JSONField(_("详情"), default=dict, blank=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        verbose_name = _("审计记录")
        verbose_name_plural = _("审计记录")
        ordering = ["-at"]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor_name} {self.action} {self.object_id}"

    def save(self, *args: object, **kwargs: object) -> None:
        if self.pk is not None:
            raise ValidationError("audit events are append-only")
        super().save(*args, **kwargs)  # type: ignore[arg-type]

    def delete(self, *args: object, **kwargs: object) -> tuple[int, dict[str, int]]:
        raise ValidationError("audit events are append-only")


class LoginThrottle(models.Model):
    """Password attempts counted against one key within a fixed window: a client address
    (`address:203.0.113.5`), a username tried from a browser the user has not signed in
    from (`user:dr_li`), or one such browser (`device:<id>`). An attempt is counted before
    the password is checked, in one UPDATE, so parallel requests cannot all pass the
    limit (facilities.services.begin_password_attempt)."""

    key = models.CharField(max_length=200, unique=True)
    failures = models.PositiveIntegerField(default=0)
    window_started_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = _("登录尝试计数")
        verbose_name_plural = _("登录尝试计数")

    def __str__(self) -> str:
        return f"{self.key}: {self.failures}"


class ApiTokenQuerySet(models.QuerySet["ApiToken"]):
    def active(self) -> ApiTokenQuerySet:
        return self.filter(Q(expiry__isnull=True) | Q(expiry__gt=timezone.now()))

    def revoke_all(self, user: User, *, reason: str) -> int:
        """Delete every token of `user`, with one audit entry naming them, and say how many."""
        keys = list(self.filter(user=user).values_list("token_key", flat=True))
        if not keys:
            return 0
        self.filter(user=user).delete()
        AuditEvent.objects.create(
            action="facilities.api_token.revoked",  # facilities.services.API_TOKEN_REVOKED
            actor_name="",
            object_type="facilities.user",
            object_id=str(user.uuid),
            facility=user.facility,
            detail={"username": user.get_username(), "reason": reason, "tokens": keys},
        )
        return len(keys)


class ApiToken(AbstractAuthToken):
    """A DICOMweb / API token (django-rest-knox's token, KNOX_TOKEN_MODEL): kept only as a
    SHA-512 digest and its first characters (`token_key`, shown to tell tokens apart),
    with an expiry, a name its owner gave it and what it may do. Deleted when revoked, when
    its owner's password changes and when they are deactivated; the audit trail keeps
    its key."""

    class Scope(models.TextChoices):
        READ = "read", _("只读（查询与调阅）")
        WRITE = "write", _("读写（含 STOW-RS 上传与检查登记）")

    # Knox's own field, declared again so that the type checker sees the relation; knox
    # finds a user's other tokens through its related name.
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="auth_token_set")
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(_("名称"), max_length=64)
    scope = models.CharField(_("令牌权限"), max_length=8, choices=Scope.choices, default=Scope.READ)

    # Knox's create() makes the secret and stores its digest; the queryset adds ours.
    objects = AuthTokenManager.from_queryset(ApiTokenQuerySet)()

    class Meta:
        verbose_name = _("API 令牌")
        verbose_name_plural = _("API 令牌")
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"{self.name} ({self.token_key}…)"

    @property
    def may_write(self) -> bool:
        return self.scope == self.Scope.WRITE
