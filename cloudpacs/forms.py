"""Forms of the archive's pages: registering an exam (检查登记)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from cloudpacs.models import BodyPart, OrderPriority
from facilities.models import Facility, Modality

SEXES = [("", _("未知")), ("M", _("男")), ("F", _("女")), ("O", _("其他"))]


class BodyPartChoiceField(forms.ModelMultipleChoiceField):
    def label_from_instance(self, obj: BodyPart) -> str:  # type: ignore[override]
        return f"{obj.name_zh} ({'/'.join(obj.kind_list)})"


class OrderForm(forms.Form):
    patient_name = forms.CharField(label=_("患者姓名"), max_length=64, help_text=_("中文姓名，如 张三"))
    patient_name_pinyin = forms.CharField(
        label=_("姓名拼音"), max_length=64, required=False, help_text=_("可选，如 ZHANG^SAN")
    )
    patient_id = forms.CharField(label=_("患者 ID"), max_length=64)
    patient_sex = forms.ChoiceField(label=_("性别"), choices=SEXES, required=False)
    patient_birth_date = forms.DateField(
        label=_("出生日期"), required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    modality = forms.ModelChoiceField(label=_("检查设备"), queryset=Modality.objects.none(), empty_label=None)
    body_parts = BodyPartChoiceField(
        label=_("检查部位"), queryset=BodyPart.objects.filter(is_active=True), widget=forms.CheckboxSelectMultiple
    )
    priority = forms.ChoiceField(label=_("优先级"), choices=OrderPriority.choices, initial=OrderPriority.ROUTINE)
    clinical_history = forms.CharField(label=_("病史摘要"), required=False, widget=forms.Textarea(attrs={"rows": 3}))
    question = forms.CharField(label=_("会诊目的"), required=False, widget=forms.Textarea(attrs={"rows": 2}))
    scheduled_at = forms.DateTimeField(
        label=_("预约时间"),
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S"],
    )

    def __init__(self, *args: Any, facility: Facility, **kwargs: Any) -> None:
        kwargs.setdefault("initial", {}).setdefault(
            "scheduled_at", timezone.localtime().replace(second=0, microsecond=0)
        )
        super().__init__(*args, **kwargs)
        field: Any = self.fields["modality"]
        field.queryset = Modality.objects.filter(facility=facility, is_active=True).order_by("kind", "ae_title")
