"""Forms of the consults pages."""

from __future__ import annotations

from typing import Any

from django import forms
from django.db.models import QuerySet
from django.http import QueryDict
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext_lazy as _

from cloudpacs.models import BodyPart
from consults.models import OPEN_STATUSES, Consult, Phrase, Priority, ReportLanguage
from consults.rules import (
    BAD_PRIORITY,
    CONSULTS_GONE,
    EMPTY_ADDENDUM,
    EMPTY_CRITICAL,
    EMPTY_IMPRESSION,
    NO_CONSULTS_CHOSEN,
    NOT_ON_DUTY,
    TOO_FEW_BODY_PARTS,
    Step,
    WorkflowError,
    check_request,
)
from facilities.models import ExamKind, Facility, User
from facilities.names import by_pinyin
from facilities.widgets import date_input


class ConsultSearchForm(forms.Form):
    """The township page's search: a patient (name in characters or pinyin initials, ID)
    or an accession number, the exam date's range, the status."""

    q = forms.CharField(
        label=_("患者或检查号"),
        required=False,
        max_length=64,
        widget=forms.TextInput(attrs={"type": "search", "placeholder": _("姓名、拼音首字母、患者 ID 或检查号")}),
    )
    since = forms.DateField(label=_("检查日期自"), required=False, widget=date_input())
    until = forms.DateField(label=_("至"), required=False, widget=date_input())
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


class WorklistFilterForm(forms.Form):
    """The worklist's filters: a township (by code), a modality, one of the open statuses,
    only the reader's own. A value that is none of these filters nothing, as before it was
    chosen."""

    facility = forms.CharField(required=False, max_length=32)
    modality = forms.ChoiceField(required=False, choices=[("", ""), *ExamKind.choices])
    STATUSES = [(value, label) for value, label in Consult.Status.choices if value in OPEN_STATUSES]
    status = forms.ChoiceField(required=False, choices=[("", ""), *STATUSES])
    mine = forms.BooleanField(required=False)

    def chosen(self) -> dict[str, Any]:
        """Every filter's value, empty for one not chosen or not valid."""
        self.is_valid()
        cleaned = getattr(self, "cleaned_data", {})
        return {name: cleaned.get(name, field.initial or "") for name, field in self.fields.items()}


class BirthDateForm(forms.Form):
    """The verification page's second factor."""

    birth_date = forms.DateField(label=_("患者出生日期"), widget=date_input(calendar=False))


class ReportPdfForm(forms.Form):
    """The printed report's language (`?language=`, or the print button's): its labels,
    headings and dates; the report's own text is printed as it was written. Without one,
    the page's language (consults.views.reading.report_pdf)."""

    language = forms.ChoiceField(choices=ReportLanguage.choices, required=False)


class ConsultRequestForm(forms.Form):
    """A consult request's fields, as the technologist asks for a reading or corrects one.
    Every field may be left out of a correction: only those posted change. The values are
    checked by the rule the services apply (consults.rules.check_request)."""

    clinical_history = forms.CharField(required=False, strip=True)
    body_part_names = forms.CharField(required=False, strip=True, max_length=128)
    # A value that is no whole number, or no priority, gets the rule's own message.
    body_parts = forms.IntegerField(required=False, error_messages={"invalid": TOO_FEW_BODY_PARTS})
    priority = forms.ChoiceField(
        required=False, choices=Priority.choices, error_messages={"invalid_choice": BAD_PRIORITY}
    )
    question = forms.CharField(required=False, strip=True)

    FIELDS = ("clinical_history", "body_part_names", "body_parts", "priority", "question")

    @classmethod
    def of(cls, consult: Consult) -> ConsultRequestForm:
        """The form filled with the consult's request as it stands, to be corrected."""
        return cls(initial={name: getattr(consult, name) for name in cls.FIELDS})

    def clean_priority(self) -> str | None:
        priority = self.cleaned_data.get("priority") or None
        self._check(priority=priority)
        return priority

    def clean_body_parts(self) -> int | None:
        body_parts = self.cleaned_data.get("body_parts")
        self._check(body_parts=body_parts)
        return body_parts

    @staticmethod
    def _check(**value: Any) -> None:
        try:
            check_request(**value)
        except WorkflowError as refused:
            raise forms.ValidationError(str(refused)) from refused

    def posted(self) -> dict[str, Any]:
        """The cleaned values of the fields that were posted: a correction's changes (a
        priority or a count posted empty changes nothing)."""
        return {
            name: self.cleaned_data[name]
            for name in self.FIELDS
            if name in self.data and self.cleaned_data[name] is not None
        }


# A report, an addendum or a critical finding longer than this is a paste gone wrong, not a text.
TEXT_LIMIT = 20000

UNKNOWN_ACTION = _("未知的报告操作。")


class ReportForm(forms.Form):
    """The reading page's report: its text and the button pressed. Save a draft, sign
    preliminary (初诊), sign (签发, 审核签发), or sign and open the next case. A signature
    needs an impression. A text left out of the POST is left as saved; the page shown again
    after a refusal shows the text as posted, so nothing typed is lost."""

    SAVE, PRELIMINARY, SIGN, SIGN_NEXT = "save", "preliminary", "sign", "sign_next"
    STEPS = {SAVE: Step.EDIT, PRELIMINARY: Step.PRELIMINARY, SIGN: Step.SIGN, SIGN_NEXT: Step.SIGN}

    findings = forms.CharField(label=_("影像所见"), required=False, max_length=TEXT_LIMIT)
    impression = forms.CharField(label=_("诊断意见"), required=False, max_length=TEXT_LIMIT)
    action = forms.ChoiceField(
        required=False,
        choices=[(SAVE, SAVE), (PRELIMINARY, PRELIMINARY), (SIGN, SIGN), (SIGN_NEXT, SIGN_NEXT)],
        error_messages={"invalid_choice": UNKNOWN_ACTION},
    )

    def clean_action(self) -> str:
        return self.cleaned_data.get("action") or self.SAVE

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        signs = cleaned.get("action") in (self.PRELIMINARY, self.SIGN, self.SIGN_NEXT)
        # Left out of the POST, the saved impression is the one signed: the service checks it.
        if signs and "impression" in self.data and not cleaned.get("impression"):
            self.add_error("impression", EMPTY_IMPRESSION)
        return cleaned

    @property
    def step(self) -> Step:
        """The step the button asks for; a draft's for an unknown button (the form refuses it)."""
        return self.STEPS.get(str(self.data.get("action") or self.SAVE), Step.EDIT)

    def text(self) -> dict[str, str | None]:
        """The cleaned findings and impression, None for one not posted (kept as saved)."""
        return {name: self.cleaned_data[name] if name in self.data else None for name in ("findings", "impression")}


class AddendumForm(forms.Form):
    """A later addition to a signed report."""

    text = forms.CharField(label=_("补充报告"), max_length=TEXT_LIMIT, error_messages={"required": EMPTY_ADDENDUM})


class CriticalFindingForm(forms.Form):
    """A critical finding (危急值) the reader reports to the township at once."""

    description = forms.CharField(
        label=_("危急值内容"), max_length=TEXT_LIMIT, error_messages={"required": EMPTY_CRITICAL}
    )


class ReassignForm(forms.Form):
    """重新分配: to a named reader on duty for the consult's kind (`readers`), or, left
    empty, to the least loaded of them."""

    to = forms.UUIDField(label=_("重新分配给"), required=False, error_messages={"invalid": NOT_ON_DUTY})

    def __init__(self, *args: Any, readers: QuerySet[User], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.readers = readers

    def clean_to(self) -> User | None:
        chosen = self.cleaned_data.get("to")
        if chosen is None:
            return None
        reader = self.readers.filter(uuid=chosen).first()
        if reader is None:
            raise forms.ValidationError(NOT_ON_DUTY)
        return reader


class ReportTemplateForm(forms.Form):
    """A radiologist's own report template: the kind, the parts it is offered for (or a
    label that names them), its name and text, and the report language."""

    kind = forms.ChoiceField(label=_("检查类型"), choices=ExamKind.choices)
    body_part = forms.CharField(label=_("检查部位"), max_length=32, strip=True)
    parts = forms.ModelMultipleChoiceField(
        label=_("适用部位"), required=False, queryset=BodyPart.objects.filter(is_active=True)
    )
    name = forms.CharField(label=_("名称"), max_length=64, strip=True)
    findings = forms.CharField(label=_("影像所见"), required=False, strip=True, widget=forms.Textarea)
    impression = forms.CharField(label=_("诊断意见"), strip=True, widget=forms.Textarea)
    language = forms.ChoiceField(label=_("语言"), choices=ReportLanguage.choices, required=False)


SHORTCUT_FORMAT = _("缩写只能由字母和数字组成。")


class PhraseForm(forms.ModelForm):
    """A phrase of the radiologist's own bank."""

    class Meta:
        model = Phrase
        fields = ("shortcut", "text", "kind", "language")
        widgets = {"text": forms.Textarea(attrs={"rows": 3})}

    def clean_shortcut(self) -> str:
        shortcut = (self.cleaned_data.get("shortcut") or "").strip()
        if shortcut and not (shortcut.isascii() and shortcut.isalnum()):
            raise forms.ValidationError(SHORTCUT_FORMAT)
        return shortcut.lower()


class PhraseDeleteForm(forms.Form):
    phrase = forms.UUIDField()


UNASSIGNED = "none"


class OpenConsultsFilterForm(forms.Form):
    """The administrators' view of open consults: which township, kind, priority and
    reader ("none": the shared worklist, nobody holds them), and only the overdue."""

    township = forms.ModelChoiceField(
        label=_("乡镇"),
        queryset=Facility.objects.filter(kind=Facility.Kind.TOWNSHIP_CENTRE),
        to_field_name="uuid",
        required=False,
        empty_label=_("全部乡镇"),
    )
    kind = forms.ChoiceField(label=_("检查类型"), required=False, choices=[("", _("全部类型")), *ExamKind.choices])
    priority = forms.ChoiceField(label=_("优先级"), required=False, choices=[("", _("全部")), *Priority.choices])
    radiologist = forms.ChoiceField(label=_("诊断医师"), required=False)
    overdue = forms.BooleanField(label=_("只看超时"), required=False)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        readers = by_pinyin(User.objects.filter(role=User.Role.RADIOLOGIST))
        radiologist = self.fields["radiologist"]
        assert isinstance(radiologist, forms.ChoiceField)
        radiologist.choices = [
            ("", _("全部医师")),
            (UNASSIGNED, _("未分配（共享工作列表）")),
            *((str(u.uuid), str(u)) for u in readers),
        ]


class BulkReassignForm(forms.Form):
    """The administrators' bulk reassignment: the consults ticked, the reader who takes
    them, and why. Whether each consult may move and the reader may take it is the
    workflow's (consults.workflow.reassign_consults), which names the consult it refuses."""

    consults = forms.ModelMultipleChoiceField(
        queryset=Consult.objects.all(),
        to_field_name="uuid",
        error_messages={
            "required": NO_CONSULTS_CHOSEN,
            "invalid_choice": CONSULTS_GONE,
            "invalid_pk_value": CONSULTS_GONE,
        },
    )
    to = forms.ModelChoiceField(
        label=_("转给"),
        queryset=User.objects.filter(role=User.Role.RADIOLOGIST),
        to_field_name="uuid",
        error_messages={"required": _("请选择接收会诊的医师。"), "invalid_choice": _("请选择接收会诊的医师。")},
    )
    note = forms.CharField(label=_("说明"), required=False, max_length=200, strip=True)


class AlertsPageForm(forms.Form):
    """The alerts page, or only its list (`?fragment=1`), which the open page polls for."""

    fragment = forms.BooleanField(required=False)

    def only_the_list(self) -> bool:
        return bool(self.is_valid() and self.cleaned_data["fragment"])


class ReturnToForm(forms.Form):
    """Where a step's POST goes back to (its hidden `next`): a page of this site only; any
    other address, or none, leaves the step's own default."""

    next = forms.CharField(required=False, max_length=2000)

    def __init__(self, data: Any, *, host: str, secure: bool) -> None:
        super().__init__(data)
        self.host = host
        self.secure = secure

    def clean_next(self) -> str:
        target = str(self.cleaned_data["next"])
        allowed = url_has_allowed_host_and_scheme(target, allowed_hosts={self.host}, require_https=self.secure)
        return target if target and allowed else ""

    def target(self, default: str) -> str:
        return (self.cleaned_data["next"] if self.is_valid() else "") or default


# What the open consults page's query string may carry back after a bulk reassignment.
OPEN_CONSULTS_PARAMETERS = ("township", "kind", "priority", "radiologist", "overdue", "page")


class OpenConsultsReturnForm(forms.Form):
    """The open consults page's query string as it was when the bulk reassignment was
    posted (`query`), so the page comes back with its filters: only its own parameters,
    re-encoded."""

    query = forms.CharField(required=False, max_length=2000)

    def clean_query(self) -> str:
        asked = QueryDict(self.cleaned_data["query"])
        kept = QueryDict(mutable=True)
        for name in OPEN_CONSULTS_PARAMETERS:
            if name in asked:
                kept[name] = asked[name]
        return kept.urlencode()

    def query_string(self) -> str:
        return self.cleaned_data["query"] if self.is_valid() else ""


def first_error(form: forms.BaseForm) -> str:
    """The first validation message of a form, for a page that shows one message."""
    return next((str(message) for errors in form.errors.values() for message in errors), "")
