"""Forms of the archive's pages: registering an exam (检查登记)."""

from __future__ import annotations

import math
import re
from typing import Any

from django import forms
from django.utils import timezone
from django.utils.translation import get_language
from django.utils.translation import gettext_lazy as _

from cloudpacs import keyobjects
from cloudpacs.models import BodyPart, OrderPriority
from facilities.models import Facility, Modality
from facilities.widgets import date_input, datetime_input

SEXES = [("", _("未知")), ("M", _("男")), ("F", _("女")), ("O", _("其他"))]


# A Study Instance UID as the viewer's URLs and query take it: digits and dots, at most 64.
UID_PATTERN = r"[0-9.]{1,64}"


class ViewerForm(forms.Form):
    """The viewer page's query: a prior study to open beside the study (`?prior=`)."""

    prior = forms.RegexField(regex=rf"^{UID_PATTERN}$", required=False)


class BodyPartChoiceField(forms.ModelMultipleChoiceField):
    def label_from_instance(self, obj: BodyPart) -> str:  # type: ignore[override]
        return f"{obj.name(get_language() or 'zh-hans')} ({'/'.join(obj.kind_list)})"


class OrderForm(forms.Form):
    patient_name = forms.CharField(label=_("患者姓名"), max_length=64, help_text=_("中文姓名，如 张三"))
    patient_name_pinyin = forms.CharField(
        label=_("姓名拼音"), max_length=64, required=False, help_text=_("可选，姓在前，如 Zhang San")
    )
    patient_id = forms.CharField(label=_("患者 ID"), max_length=64)
    patient_sex = forms.ChoiceField(label=_("性别"), choices=SEXES, required=False)
    patient_birth_date = forms.DateField(label=_("出生日期"), required=False, widget=date_input(calendar=False))
    modality = forms.ModelChoiceField(label=_("检查设备"), queryset=Modality.objects.none(), empty_label=None)
    body_parts = BodyPartChoiceField(
        label=_("检查部位"), queryset=BodyPart.objects.filter(is_active=True), widget=forms.CheckboxSelectMultiple
    )
    priority = forms.ChoiceField(label=_("优先级"), choices=OrderPriority.choices, initial=OrderPriority.ROUTINE)
    clinical_history = forms.CharField(label=_("病史摘要"), required=False, widget=forms.Textarea(attrs={"rows": 3}))
    question = forms.CharField(label=_("会诊目的"), required=False, widget=forms.Textarea(attrs={"rows": 2}))
    scheduled_at = forms.DateTimeField(
        label=_("预约时间"),
        widget=datetime_input(),
        input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S"],
    )

    def __init__(self, *args: Any, facility: Facility, **kwargs: Any) -> None:
        kwargs.setdefault("initial", {}).setdefault(
            "scheduled_at", timezone.localtime().replace(second=0, microsecond=0)
        )
        super().__init__(*args, **kwargs)
        field: Any = self.fields["modality"]
        field.queryset = Modality.objects.filter(facility=facility, is_active=True).order_by("kind", "ae_title")


UID_RE = re.compile(r"[0-9.]{1,64}")
MAX_MARKS = 200


class ReadingMarksForm(forms.Form):
    """The viewer's key images and measurements, posted as two JSON lists (the viewer's
    save button): key_images [{sop_instance_uid, frame}], measurements [{tool,
    sop_instance_uid, frame, points: [[column, row], ...], text}], points in image pixel
    coordinates. Whether the images are the study's is the service's to say."""

    key_images = forms.JSONField(required=False)
    measurements = forms.JSONField(required=False)

    def _list(self, name: str) -> list[Any]:
        value = self.cleaned_data.get(name) or []
        if not isinstance(value, list):
            raise forms.ValidationError(_("应为列表。"))
        if len(value) > MAX_MARKS:
            raise forms.ValidationError(_("最多 %(n)d 项。") % {"n": MAX_MARKS})
        return value

    @staticmethod
    def _image(item: Any) -> dict[str, Any]:
        if not isinstance(item, dict):
            raise forms.ValidationError(_("每一项应为对象。"))
        uid = item.get("sop_instance_uid")
        if not isinstance(uid, str) or not UID_RE.fullmatch(uid):
            raise forms.ValidationError(_("图像 UID 无效。"))
        frame = item.get("frame", 1)
        if not isinstance(frame, int) or isinstance(frame, bool) or not 1 <= frame <= 100_000:
            raise forms.ValidationError(_("帧号无效。"))
        return {"sop_instance_uid": uid, "frame": frame}

    def clean_key_images(self) -> list[dict[str, Any]]:
        return [self._image(item) for item in self._list("key_images")]

    def clean_measurements(self) -> list[dict[str, Any]]:
        cleaned = []
        for item in self._list("measurements"):
            image = self._image(item)
            tool = item.get("tool")
            if tool not in keyobjects.TOOLS:
                raise forms.ValidationError(_("未知的测量工具：%(tool)s") % {"tool": str(tool)[:32]})
            count = keyobjects.TOOLS[tool][0]
            points = item.get("points")
            if (
                not isinstance(points, list)
                or len(points) != count
                or not all(
                    isinstance(point, list)
                    and len(point) == 2
                    and all(
                        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and abs(v) < 1e6
                        for v in point
                    )
                    for point in points
                )
            ):
                raise forms.ValidationError(_("%(tool)s 需要 %(n)d 个坐标点。") % {"tool": tool, "n": count})
            text = item.get("text", "")
            if not isinstance(text, str):
                raise forms.ValidationError(_("测量文字无效。"))
            cleaned.append({**image, "tool": tool, "points": points, "text": text.strip()[:64]})
        return cleaned
