"""Forms of the consults pages."""

from __future__ import annotations

from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _

from consults.models import Consult


class ConsultSearchForm(forms.Form):
    """The township page's search: a patient (name in characters or pinyin initials, ID)
    or an accession number, the exam date's range, the status."""

    q = forms.CharField(
        label=_("患者或检查号"),
        required=False,
        max_length=64,
        widget=forms.TextInput(attrs={"type": "search", "placeholder": _("姓名、拼音首字母、患者 ID 或检查号")}),
    )
    since = forms.DateField(label=_("检查日期自"), required=False, widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(label=_("至"), required=False, widget=forms.DateInput(attrs={"type": "date"}))
    status = forms.ChoiceField(label=_("状态"), required=False)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        status = self.fields["status"]
        assert isinstance(status, forms.ChoiceField)
        status.choices = [("", _("全部")), *Consult.Status.choices]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        since, until = cleaned.get("since"), cleaned.get("until")
        if since and until and since > until:
            raise forms.ValidationError(_("起始日期不能晚于截止日期。"))
        return cleaned


class BirthDateForm(forms.Form):
    """The verification page's second factor."""

    birth_date = forms.DateField(label=_("患者出生日期"), widget=forms.DateInput(attrs={"type": "date"}))
