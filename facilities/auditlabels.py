"""What the audit page shows an administrator instead of codes: each dotted action code's
name, each detail key's name, and each object's label with a link.

The codes are written by every app (facilities.services.audit); their names are kept here,
beside the trail, as plain strings, so this low app imports none of the apps above it.
A code without a name (a new one) is shown as written."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from django.apps import apps
from django.contrib import admin
from django.core.exceptions import FieldDoesNotExist, ValidationError
from django.db.models import Field, Model
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.functional import Promise
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from facilities.models import AuditEvent, User

ACTIONS: dict[str, Promise] = {
    "facilities.login.succeeded": gettext_lazy("登录成功"),
    "facilities.login.failed": gettext_lazy("登录失败"),
    "facilities.login.locked": gettext_lazy("登录被锁定"),
    "facilities.login.logged_out": gettext_lazy("退出登录"),
    "facilities.password.changed": gettext_lazy("修改密码"),
    "facilities.password.change_failed": gettext_lazy("修改密码失败"),
    "cloudpacs.study.viewed": gettext_lazy("查看检查"),
    "cloudpacs.study.retrieved": gettext_lazy("调阅影像"),
    "cloudpacs.study.access_refused": gettext_lazy("越权调阅被拒"),
    "cloudpacs.storage_commitment.reported": gettext_lazy("存储确认"),
    "cloudpacs.study.stored_over_web": gettext_lazy("网页上传影像"),
    "cloudpacs.instance.replaced": gettext_lazy("更正影像替换原图"),
    "cloudpacs.instance.correction_pending": gettext_lazy("签发后收到更正影像"),
    "cloudpacs.study.marks_saved": gettext_lazy("保存关键图像与测量"),
    "cloudpacs.order.registered": gettext_lazy("登记检查"),
    "cloudpacs.order.cancelled": gettext_lazy("取消检查登记"),
    "cloudpacs.order.linked": gettext_lazy("检查关联到登记"),
    "cloudpacs.order.match_confirmed": gettext_lazy("确认检查关联"),
    "cloudpacs.order.match_rejected": gettext_lazy("否认检查关联"),
    "cloudpacs.order.viewed": gettext_lazy("查看检查登记"),
    "cloudpacs.orders.viewed": gettext_lazy("查看检查登记列表"),
    "cloudpacs.performed_step.reported": gettext_lazy("设备报告检查进度"),
    "consults.consult.created": gettext_lazy("生成会诊"),
    "consults.consult.requested": gettext_lazy("申请会诊"),
    "consults.consult.assigned": gettext_lazy("分配会诊"),
    "consults.consult.claimed": gettext_lazy("领取会诊"),
    "consults.consult.released": gettext_lazy("释放会诊"),
    "consults.consult.reassigned": gettext_lazy("重新分配会诊"),
    "consults.consult.opened": gettext_lazy("打开会诊"),
    "consults.consult.corrected": gettext_lazy("修改会诊申请"),
    "consults.consult.flagged": gettext_lazy("临近时限提醒"),
    "consults.consult.escalated": gettext_lazy("超时上报"),
    "consults.report.viewed": gettext_lazy("查看报告"),
    "consults.report.saved": gettext_lazy("保存报告草稿"),
    "consults.report.preliminary": gettext_lazy("初诊签名"),
    "consults.report.signed": gettext_lazy("签发报告"),
    "consults.report.addendum": gettext_lazy("添加补充报告"),
    "consults.report.printed": gettext_lazy("打印报告"),
    "consults.report.delivered": gettext_lazy("报告送达"),
    "consults.report.send_queued": gettext_lazy("报告待回传"),
    "consults.report.sent": gettext_lazy("报告已回传"),
    "consults.report.send_failed": gettext_lazy("报告回传失败"),
    "consults.report.send_retried": gettext_lazy("重新回传报告"),
    "consults.report.verified": gettext_lazy("报告验真"),
    "consults.report.verification_failed": gettext_lazy("报告验真失败"),
    "consults.critical.flagged": gettext_lazy("报告危急值"),
    "consults.critical.acknowledged": gettext_lazy("确认危急值"),
    "consults.critical.email_queued": gettext_lazy("危急值邮件待发送"),
    "consults.critical.emailed": gettext_lazy("危急值邮件已发送"),
    "consults.critical.email_failed": gettext_lazy("危急值邮件发送失败"),
    "consults.critical.escalated": gettext_lazy("危急值超时上报"),
    "consults.escalation.email_queued": gettext_lazy("上报邮件待发送"),
    "consults.escalation.emailed": gettext_lazy("上报邮件已发送"),
    "consults.escalation.email_failed": gettext_lazy("上报邮件发送失败"),
    "consults.template.created": gettext_lazy("新增报告模板"),
    "consults.phrase.created": gettext_lazy("新增常用语"),
    "facilities.api_token.created": gettext_lazy("创建 API 令牌"),
    "facilities.api_token.revoked": gettext_lazy("吊销 API 令牌"),
    "billing.export.downloaded": gettext_lazy("导出报表"),
    "billing.saving.recorded": gettext_lazy("记录节省"),
    "billing.saving.reversed": gettext_lazy("冲销节省"),
    "billing.saving.seeded": gettext_lazy("导入历史节省"),
    "billing.monthly_report.generated": gettext_lazy("生成月报"),
    "billing.monthly_report.downloaded": gettext_lazy("下载月报"),
}

# The admin writes `<app>.<model>.<verb>` for what it adds, changes and deletes.
ADMIN_VERBS: dict[str, Promise] = {
    "added": gettext_lazy("新增%(model)s"),
    "changed": gettext_lazy("修改%(model)s"),
    "deleted": gettext_lazy("删除%(model)s"),
}

DETAIL_KEYS: dict[str, Promise] = {
    "via": gettext_lazy("途径"),
    "page": gettext_lazy("页面"),
    "signed": gettext_lazy("已签发"),
    "channel": gettext_lazy("方式"),
    "to": gettext_lazy("目标"),
    "reason": gettext_lazy("原因"),
    "error": gettext_lazy("错误"),
    "attempt": gettext_lazy("尝试次数"),
    "username": gettext_lazy("用户名"),
    "changes": gettext_lazy("修改内容"),
    "object": gettext_lazy("对象"),
    "kind": gettext_lazy("检查类型"),
    "body_parts": gettext_lazy("部位数"),
    "priority": gettext_lazy("优先级"),
    "instances": gettext_lazy("图像数"),
    "study_uid": gettext_lazy("检查 UID"),
    "finding": gettext_lazy("危急值"),
    "radiologist": gettext_lazy("诊断医师"),
    "minutes": gettext_lazy("分钟"),
    "locked_until": gettext_lazy("锁定至"),
    "saving": gettext_lazy("节省金额"),
    "final": gettext_lazy("终审"),
    "previous": gettext_lazy("原医师"),
    "reassigned": gettext_lazy("已重新分配"),
    "refused": gettext_lazy("拒绝原因"),
    "intact": gettext_lazy("内容一致"),
    "unlocked": gettext_lazy("已查看内容"),
    "sop_instance_uid": gettext_lazy("图像 UID"),
    "ae_title": gettext_lazy("发送设备 AE"),
    "sha256": gettext_lazy("新内容 SHA-256"),
    "stored_sha256": gettext_lazy("原内容 SHA-256"),
    "calling_ae": gettext_lazy("发起方 AE"),
    "destination": gettext_lazy("目的地 AE"),
    "committed": gettext_lazy("已确认"),
    "failed": gettext_lazy("未确认"),
    "note": gettext_lazy("说明"),
    "month": gettext_lazy("月份"),
    "trigger": gettext_lazy("生成方式"),
    "accession_number": gettext_lazy("检查号"),
    "order": gettext_lazy("检查号"),
    "matched_by": gettext_lazy("关联方式"),
    "status": gettext_lazy("状态"),
    "count": gettext_lazy("条数"),
    "addendum": gettext_lazy("补充报告"),
    "preliminary_by": gettext_lazy("初诊医师"),
    "method": gettext_lazy("分配方式"),
    "due_at": gettext_lazy("诊断时限"),
    "notification": gettext_lazy("通知"),
    "consult": gettext_lazy("会诊"),
    "exam_kind": gettext_lazy("检查类型"),
    "schedule": gettext_lazy("价格标准"),
    "reverses": gettext_lazy("冲正的记录"),
    "exams": gettext_lazy("检查数"),
    "seed": gettext_lazy("随机种子"),
    "key_images": gettext_lazy("关键图像数"),
    "measurements": gettext_lazy("测量数"),
    "kos": gettext_lazy("关键图像对象 UID"),
    "gsps": gettext_lazy("显示状态对象 UID"),
    "parts": gettext_lazy("部位"),
    "shortcut": gettext_lazy("缩写"),
    "token": gettext_lazy("令牌"),
    "tokens": gettext_lazy("令牌数"),
    "name": gettext_lazy("名称"),
    "scope": gettext_lazy("令牌权限"),
    "expiry": gettext_lazy("有效期至"),
    "limit": gettext_lazy("次数上限"),
    "table": gettext_lazy("报表"),
    "format": gettext_lazy("格式"),
    "filters": gettext_lazy("筛选条件"),
    "content_type": gettext_lazy("内容类型"),
    "inlines": gettext_lazy("子项修改"),
}

# Values written as codes, by detail key: what the page shows instead.
DETAIL_VALUES: dict[str, dict[str, Promise]] = {
    "via": {
        "viewer": gettext_lazy("影像浏览器"),
        "admin": gettext_lazy("管理后台"),
        "api": gettext_lazy("接口（API）"),
        "study": gettext_lazy("WADO-RS 检查"),
        "series": gettext_lazy("WADO-RS 序列"),
        "instance": gettext_lazy("WADO-RS 图像"),
        "study-metadata": gettext_lazy("WADO-RS 检查元数据"),
        "series-metadata": gettext_lazy("WADO-RS 序列元数据"),
    },
    "matched_by": {
        "accession": gettext_lazy("按检查号"),
        "patient_date": gettext_lazy("按患者 ID 与日期"),
    },
    "method": {
        "roster": gettext_lazy("排班分配"),
        "claimed": gettext_lazy("主动领取"),
        "reassigned": gettext_lazy("重新分配"),
    },
    "priority": {
        "routine": gettext_lazy("常规"),
        "urgent": gettext_lazy("加急"),
        "emergency": gettext_lazy("急诊"),
    },
    "status": {
        "IN PROGRESS": gettext_lazy("进行中"),
        "COMPLETED": gettext_lazy("已完成"),
        "DISCONTINUED": gettext_lazy("已中止"),
    },
    "scope": {
        "read": gettext_lazy("只读（查询与调阅）"),
        "write": gettext_lazy("读写（含 STOW-RS 上传与检查登记）"),
    },
    "page": {
        "reading": gettext_lazy("阅片与报告"),
    },
    "channel": {
        "web": gettext_lazy("网页确认"),
        "pdf": gettext_lazy("打印或下载 PDF"),
        "dicom": gettext_lazy("DICOM 回传"),
    },
    "reason": {
        # An escalation's (consults.Escalation.Reason) and an API token's revocation.
        "time_limit": gettext_lazy("超过诊断时限"),
        "off_duty": gettext_lazy("诊断医师下班"),
        "critical": gettext_lazy("危急值未确认"),
        "revoked_by_owner": gettext_lazy("本人吊销"),
        "password_changed": gettext_lazy("修改了密码"),
        "deactivated": gettext_lazy("账户已停用"),
    },
    "limit": {
        "address": gettext_lazy("同一地址失败次数"),
        "account": gettext_lazy("同一账户失败次数"),
    },
    "trigger": {
        "schedule": gettext_lazy("定时生成"),
        "demand": gettext_lazy("手动生成"),
    },
    "format": {
        "csv": gettext_lazy("CSV"),
        "xlsx": gettext_lazy("Excel（XLSX）"),
    },
}

# Values written as ISO 8601 times (UTC): shown in local time, to the minute.
DETAIL_TIMES = {"due_at", "locked_until", "expiry"}

# The exports' tables (billing.views, `billing.export.downloaded`'s table), by the name
# written: the page's, then its table's.
EXPORT_PAGES: dict[str, Promise] = {
    "savings": gettext_lazy("节省费用"),
    "turnaround": gettext_lazy("会诊周转时间"),
    "volume": gettext_lazy("检查量"),
    "growth": gettext_lazy("同比环比"),
    "workload": gettext_lazy("医师工作量"),
    "timeliness": gettext_lazy("时限达标"),
}
EXPORT_TABLES: dict[str, Promise] = {
    "township": gettext_lazy("按乡镇"),
    "kind": gettext_lazy("按检查类型"),
    "year": gettext_lazy("按年"),
    "month": gettext_lazy("按月"),
    "travel": gettext_lazy("患者节省"),
    "entries": gettext_lazy("台账明细"),
    "radiologist": gettext_lazy("按医师"),
    "radiologists": gettext_lazy("按医师"),
    "months": gettext_lazy("按月"),
    "period": gettext_lazy("按时段"),
    "exams-year": gettext_lazy("检查量，按年"),
    "exams-month": gettext_lazy("检查量，按月"),
    "savings-year": gettext_lazy("节省费用，按年"),
    "savings-month": gettext_lazy("节省费用，按月"),
}


def action_label(code: str) -> str:
    """The action's name in the active language, or the code when it has none."""
    if code in ACTIONS:
        return str(ACTIONS[code])
    app_label, _dot, rest = code.partition(".")
    model_name, _dot, verb = rest.rpartition(".")
    if verb in ADMIN_VERBS and model_name:
        try:
            model = apps.get_model(app_label, model_name)
        except LookupError:
            return code
        return str(ADMIN_VERBS[verb]) % {"model": model._meta.verbose_name}
    return code


def _value(value: Any) -> str:
    if value is None or value == "":
        return "—"
    if value is True:
        return _("是")
    if value is False:
        return _("否")
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _time(value: str) -> str:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    if timezone.is_naive(moment):
        return value
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M")


def _field(model: type[Model] | None, name: str) -> Field | None:
    if model is None:
        return None
    try:
        field = model._meta.get_field(name)
    except FieldDoesNotExist:
        return None
    return field if isinstance(field, Field) else None


def _field_name(model: type[Model] | None, name: str) -> str:
    field = _field(model, name)
    return str(field.verbose_name) if field is not None else str(DETAIL_KEYS.get(name, name))


def _field_value(model: type[Model] | None, name: str, value: Any) -> str:
    """A field's value before or after an edit: a choice by its label (角色：诊断医师, not
    radiologist), yes and no for a box, "—" for nothing."""
    if value is None or value == "":
        return "—"
    field = _field(model, name)
    if field is not None and field.choices:
        labels = {str(code): label for code, label in field.flatchoices}
        if str(value) in labels:
            return str(labels[str(value)])
    return _value(value)


def _changes(value: Any, model: type[Model] | None) -> str:
    """An edit's fields as "字段：之前 → 之后" ("字段：值" for an object added), each field by
    its name on the form (the model's verbose name where the object is known)."""
    if not isinstance(value, dict):
        return _value(value)
    parts = []
    for name, change in value.items():
        field = _field(model, name)
        # A change is [before, after]; an addition's value is the value (a list for a
        # many-to-many field, whose change is two lists).
        many = field is not None and field.many_to_many
        paired = isinstance(change, list) and len(change) == 2
        if paired and (not many or all(isinstance(side, list) for side in change)):
            before, after = (_field_value(model, name, v) for v in change)
            parts.append(f"{_field_name(model, name)}{_('：')}{before} → {after}")
        else:
            parts.append(f"{_field_name(model, name)}{_('：')}{_field_value(model, name, change)}")
    return _("；").join(parts)


def _inlines(value: Any) -> str:
    """The rows an admin form's inlines added, changed and deleted."""
    if not isinstance(value, list):
        return _value(value)
    parts = []
    for row in value:
        if not isinstance(row, dict):
            parts.append(_value(row))
            continue
        model = _model(str(row.get("model", "")))
        verb = ADMIN_VERBS.get(str(row.get("action", "")))
        kind = str(model._meta.verbose_name) if model is not None else str(row.get("model", ""))
        text = f"{str(verb) % {'model': kind} if verb is not None else kind} {row.get('object', '')}".strip()
        if row.get("changes"):
            text += _("（%(changes)s）") % {"changes": _changes(row["changes"], model)}
        parts.append(text)
    return _("；").join(parts)


def _export_table(value: str) -> str:
    page, _dash, table = value.partition("-")
    if page not in EXPORT_PAGES:
        return value
    if not table:
        return str(EXPORT_PAGES[page])
    named = EXPORT_TABLES.get(table, table)
    return f"{EXPORT_PAGES[page]}" + _("（%(changes)s）") % {"changes": named}


# Detail keys whose value may be a username (a reader, the one before, a notice's
# recipient): shown with the person's name.
DETAIL_PEOPLE = {"radiologist", "previous", "preliminary_by", "to", "username"}


def with_username(name: str, username: str) -> str:
    """A person as the audit trail shows them: 李明远（dr_li）."""
    return _("%(name)s（%(username)s）") % {"name": name, "username": username}


def detail_items(
    detail: dict[str, Any], model: type[Model] | None = None, people: dict[str, str] | None = None
) -> list[tuple[str, str]]:
    """The details' names and values as the page shows them: codes by their names, times
    in local time, an edit's fields by the names `model` gives them, a username with the
    person's name (`people`: username -> name)."""
    items = []
    people = people or {}
    for key, value in (detail or {}).items():
        named = DETAIL_VALUES.get(key, {}).get(value) if isinstance(value, str) else None
        if key in DETAIL_PEOPLE and isinstance(value, str) and value in people:
            shown = with_username(people[value], value)
        elif named is not None:
            shown = str(named)
        elif key in DETAIL_TIMES and isinstance(value, str):
            shown = _time(value)
        elif key == "changes":
            shown = _changes(value, model)
        elif key == "inlines":
            shown = _inlines(value)
        elif key == "table" and isinstance(value, str):
            shown = _export_table(value)
        else:
            shown = _value(value)
        items.append((str(DETAIL_KEYS.get(key, key)), shown))
    return items


@dataclass
class ShownEvent:
    event: AuditEvent
    action: str
    object_label: str
    object_url: str
    details: list[tuple[str, str]]
    # Who: the person's name as their colleagues know it, and the username they signed in
    # with (the only one kept when the name is not known, as for a name tried at login).
    person: str = ""
    username: str = ""

    @property
    def object_parts(self) -> list[str]:
        """The label's parts (检查 · 漩涡 · 胸部 CT · 2025-09-01), each kept on one line: a
        narrow column broke the date after its hyphen."""
        return self.object_label.split(" · ") if self.object_label else []


def _lookup_field(model: type[Model]) -> str:
    for name in ("uuid", "study_uid", "sop_instance_uid"):
        try:
            model._meta.get_field(name)
        except FieldDoesNotExist:
            continue
        return name
    return "pk"


def _valid_keys(model: type[Model], field: str, ids: Iterable[str]) -> list[Any]:
    """The ids that can be keys of the model: a UUID column refuses a DICOM UID."""
    if field == "pk":
        return [key for key in ids if key.isdigit()]
    column = model._meta.get_field(field)
    assert isinstance(column, Field)
    keys = []
    for key in ids:
        try:
            keys.append(column.to_python(key))
        except ValidationError:
            continue
    return keys


def _label(obj: Model) -> str:
    """A short label for an object, without a patient's name: the page is an
    administrator's, and administrators are not shown patients."""
    label = obj._meta.label_lower
    if label == "consults.consult":
        facility = getattr(obj, "facility", None)
        kind = obj.get_kind_display()  # type: ignore[attr-defined]
        exam_date = getattr(obj, "exam_date", None)
        return " · ".join(
            str(part) for part in (facility.short_name_in() if facility else "", kind, exam_date or "") if part
        )
    if label == "cloudpacs.study":
        facility = getattr(obj, "facility", None)
        parts = (
            facility.short_name_in() if facility else "",
            getattr(obj, "description", ""),
            getattr(obj, "study_date", ""),
        )
        return " · ".join(str(part) for part in parts if part)
    if label == "consults.reportverification":
        return _label(obj.report.consult)  # type: ignore[attr-defined]
    if label == "cloudpacs.order":
        # Its own name holds the patient's.
        return " · ".join(
            str(part) for part in (getattr(obj, "accession_number", ""), getattr(obj, "kind", "")) if part
        )
    if label == "facilities.facility":
        return obj.short_name_in()  # type: ignore[attr-defined]
    return str(obj)


def shown_events(events: Iterable[AuditEvent]) -> list[ShownEvent]:
    """The events of one page with their names, labels and links, a query per object type."""
    events = list(events)
    wanted: dict[str, set[str]] = defaultdict(set)
    for event in events:
        if event.object_type and event.object_id:
            wanted[event.object_type].add(event.object_id)
    found: dict[tuple[str, str], Model] = {}
    for object_type, ids in wanted.items():
        app_label, _dot, model_name = object_type.partition(".")
        try:
            model = apps.get_model(app_label, model_name)
        except (LookupError, ValueError):
            continue
        field = _lookup_field(model)
        keys = _valid_keys(model, field, ids)
        queryset = model._default_manager.filter(**{f"{field}__in": keys})  # type: ignore[attr-defined]
        if object_type in ("consults.consult", "cloudpacs.study"):
            queryset = queryset.select_related("facility")
        elif object_type == "consults.reportverification":
            queryset = queryset.select_related("report__consult__facility")
        for obj in queryset:
            found[(object_type, str(getattr(obj, field)))] = obj
    people = _people(events)
    shown = []
    for event in events:
        label, url = "", ""
        if event.object_type or event.object_id:
            obj = found.get((event.object_type, event.object_id))
            kind = event.object_type
            try:
                app_label, _dot, model_name = event.object_type.partition(".")
                kind = str(apps.get_model(app_label, model_name)._meta.verbose_name)
            except (LookupError, ValueError):
                pass
            if obj is not None:
                label = f"{kind} · {_label(obj)}"
            else:
                label = f"{kind} · {event.object_id[:12]}" if event.object_id else kind
            url = _admin_url(obj) if obj is not None else ""
            if not url and event.object_id:
                url = reverse("audit") + "?" + urlencode({"object_id": event.object_id})
        shown.append(
            ShownEvent(
                event=event,
                action=action_label(event.action),
                object_label=label,
                object_url=url,
                details=detail_items(event.detail, _model(event.object_type), people),
                **_who(event, people),
            )
        )
    return shown


def _named_username(event: AuditEvent) -> str:
    """The username an event is by: its actor's, or the one tried at a failed login."""
    if event.actor_name:
        return event.actor_name
    tried = (event.detail or {}).get("username") if isinstance(event.detail, dict) else None
    return tried if isinstance(tried, str) else ""


def _people(events: list[AuditEvent]) -> dict[str, str]:
    """{username: display name} of the people the events name (who did it, and the readers
    and recipients of their details), in one query: the trail keeps usernames, and a name
    is shown as the person's record has it today."""
    usernames = {name for name in map(_named_username, events) if name}
    for event in events:
        detail = event.detail if isinstance(event.detail, dict) else {}
        usernames.update(value for key, value in detail.items() if key in DETAIL_PEOPLE and isinstance(value, str))
    usernames.discard("")
    if not usernames:
        return {}
    rows = User.objects.filter(username__in=usernames).exclude(display_name="")
    return dict(rows.values_list("username", "display_name"))


def _who(event: AuditEvent, people: dict[str, str]) -> dict[str, str]:
    username = _named_username(event)
    return {"person": people.get(username, ""), "username": username}


def _model(object_type: str) -> type[Model] | None:
    app_label, _dot, model_name = object_type.partition(".")
    try:
        return apps.get_model(app_label, model_name)
    except (LookupError, ValueError):
        return None


def _admin_url(obj: Model) -> str:
    if not admin.site.is_registered(type(obj)):
        return ""
    meta = obj._meta
    try:
        return reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[obj.pk])
    except NoReverseMatch:
        return ""


def action_choices() -> list[tuple[str, str]]:
    """Every named action, for the search form's suggestions."""
    return [(code, str(label)) for code, label in ACTIONS.items()]
