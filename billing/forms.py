"""The dashboards' filter forms: GET forms whose errors the pages show (status 400)."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any, cast

from django import forms
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext_lazy as _

from facilities.models import ExamKind, Facility, User
from facilities.names import PinyinModelChoiceField
from facilities.widgets import date_input


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
    radiologist = PinyinModelChoiceField(
        label=_("诊断医师"),
        queryset=User.objects.filter(role=User.Role.RADIOLOGIST),
        to_field_name="uuid",
        required=False,
        empty_label=_("全部医师"),
    )


class ExamListForm(FilterForm):
    radiologist = PinyinModelChoiceField(
        label=_("诊断医师"),
        queryset=User.objects.filter(role=User.Role.RADIOLOGIST),
        to_field_name="uuid",
        required=False,
        empty_label=_("全部医师"),
    )
    year = forms.IntegerField(label=_("年份"), required=False, min_value=1900, max_value=2999)
    # A list, not a number field: a number field one digit wide was too narrow to read, and
    # the browser told "1 to 4" in its own language.
    quarter = forms.TypedChoiceField(
        label=_("季度"),
        required=False,
        coerce=int,
        empty_value=None,
        choices=[("", _("全年")), (1, _("第一季度")), (2, _("第二季度")), (3, _("第三季度")), (4, _("第四季度"))],
    )
    month = forms.RegexField(
        label=_("月份"),
        required=False,
        regex=r"^\d{4}-(0[1-9]|1[0-2])$",
        error_messages={"invalid": _("请按 YYYY-MM 选择月份。")},
        widget=forms.TextInput(attrs={"placeholder": "YYYY-MM", "inputmode": "numeric", "autocomplete": "off"}),
    )
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
    """The month of a monthly report made on demand: one that has ended. Chosen from a list
    of the ended months (newest first), written YYYY-MM in either language: the browser's
    own month field speaks the browser's language whatever the page's ("November 2026" on
    a Chinese page)."""

    # The list goes back at most this far (a study dated 1900 by a console's clock would
    # otherwise list every month since).
    LISTED_MONTHS = 120

    month = forms.RegexField(
        label=_("月份"),
        regex=r"^\d{4}-(0[1-9]|1[0-2])$",
        error_messages={"invalid": _("请按 YYYY-MM 选择月份。"), "required": _("请选择月份。")},
        widget=forms.Select,
    )

    def __init__(self, *args: Any, first_month: date | None = None, **kwargs: Any) -> None:
        """`first_month`: the month of the earliest exam on record, where the list ends."""
        super().__init__(*args, **kwargs)
        month = timezone.localdate().replace(day=1)
        months: list[str] = []
        while len(months) < self.LISTED_MONTHS:
            month = (month - timedelta(days=1)).replace(day=1)
            months.append(f"{month:%Y-%m}")
            if first_month is None or month <= first_month:
                break
        widget = cast(forms.Select, self.fields["month"].widget)
        widget.choices = [(value, value) for value in months]

    def clean_month(self) -> date:
        value = date.fromisoformat(f"{self.cleaned_data['month']}-01")
        if value >= timezone.localdate().replace(day=1):
            raise forms.ValidationError(_("只能生成已结束月份的月报。"))
        return value
