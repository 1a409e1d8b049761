"""The dashboards' filter forms: GET forms whose errors the pages show (status 400)."""

from __future__ import annotations

from datetime import date
from typing import Any, cast

from django import forms
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext_lazy as _

from facilities.models import ExamKind, Facility, User


def date_input() -> forms.DateInput:
    """A text field that static/js/dashboards.js turns into a calendar in the page's
    language; typed by hand it takes YYYY-MM-DD, the one format it shows."""
    attrs = {"data-datepicker": "1", "placeholder": "YYYY-MM-DD", "autocomplete": "off", "inputmode": "numeric"}
    return forms.DateInput(format="%Y-%m-%d", attrs=attrs)


def _attrs(attrs: dict[str, Any]) -> str:
    """Attributes as django/forms/widgets/attrs.html writes them, in their order."""
    return "".join(
        f" {name}" if value is True else f' {name}="{escape(value)}"'
        for name, value in attrs.items()
        if value is not False
    )


class QuickSelect(forms.Select):
    """A <select> built in Python, with the same HTML as Django's template-rendered one: a
    province's filter lists 1,100 townships, and the option template rendered for each
    cost more than the page's figures (docs/benchmarks-dashboards.md)."""

    def render(self, name: str, value: Any, attrs: dict[str, Any] | None = None, renderer: Any = None) -> SafeString:
        widget = self.get_context(name, value, attrs)["widget"]
        parts = [f'<select name="{escape(widget["name"])}"{_attrs(widget["attrs"])}>']
        for group_name, options, _index in widget["optgroups"]:
            if group_name:
                parts.append(f'<optgroup label="{escape(group_name)}">')
            parts.extend(
                f'<option value="{escape(o["value"])}"{_attrs(o["attrs"])}>{escape(o["label"])}</option>'
                for o in options
            )
            if group_name:
                parts.append("</optgroup>")
        parts.append("</select>")
        return mark_safe("".join(parts))  # noqa: S308 -- every value is escaped


class FilterForm(forms.Form):
    date_from = forms.DateField(label=_("起始日期"), required=False, widget=date_input())
    date_to = forms.DateField(label=_("截止日期"), required=False, widget=date_input())
    township = forms.ModelChoiceField(
        label=_("乡镇"),
        queryset=Facility.objects.none(),
        to_field_name="uuid",
        required=False,
        empty_label=_("全部乡镇"),
        widget=QuickSelect,
    )
    modality = forms.ChoiceField(label=_("检查类型"), required=False, choices=[("", _("全部类型")), *ExamKind.choices])

    def __init__(self, *args: Any, townships: QuerySet[Facility], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cast(forms.ModelChoiceField, self.fields["township"]).queryset = townships

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        start, end = data.get("date_from"), data.get("date_to")
        if start and end and start > end:
            raise forms.ValidationError(_("起始日期不能晚于截止日期。"))
        return data


class TurnaroundForm(FilterForm):
    period = forms.ChoiceField(
        label=_("时段"),
        required=False,
        choices=[("year", _("按年")), ("quarter", _("按季度")), ("month", _("按月"))],
    )


class WorkloadForm(FilterForm):
    radiologist = forms.ModelChoiceField(
        label=_("诊断医师"),
        queryset=User.objects.filter(role=User.Role.RADIOLOGIST),
        to_field_name="uuid",
        required=False,
        empty_label=_("全部医师"),
    )


class ExamListForm(FilterForm):
    radiologist = forms.ModelChoiceField(
        label=_("诊断医师"),
        queryset=User.objects.filter(role=User.Role.RADIOLOGIST),
        to_field_name="uuid",
        required=False,
        empty_label=_("全部医师"),
    )
    year = forms.IntegerField(label=_("年份"), required=False, min_value=1900, max_value=2999)
    quarter = forms.IntegerField(label=_("季度"), required=False, min_value=1, max_value=4)
    month = forms.RegexField(label=_("月份"), required=False, regex=r"^\d{4}-(0[1-9]|1[0-2])$")
    basis = forms.ChoiceField(
        label=_("范围"),
        required=False,
        choices=[("all", _("全部检查")), ("signed", _("已签发报告")), ("ledger", _("已记入节省台账"))],
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("quarter") and not data.get("year"):
            raise forms.ValidationError(_("选择季度时须同时选择年份。"))
        return data


class MonthlyReportForm(forms.Form):
    """The month of a monthly report made on demand: one that has ended."""

    month = forms.RegexField(
        label=_("月份"),
        regex=r"^\d{4}-(0[1-9]|1[0-2])$",
        error_messages={"invalid": _("请按 YYYY-MM 选择月份。"), "required": _("请选择月份。")},
        widget=forms.TextInput(attrs={"type": "month", "placeholder": "YYYY-MM"}),
    )

    def clean_month(self) -> date:
        value = date.fromisoformat(f"{self.cleaned_data['month']}-01")
        if value >= timezone.localdate().replace(day=1):
            raise forms.ValidationError(_("只能生成已结束月份的月报。"))
        return value
