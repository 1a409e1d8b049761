"""The texts a report is written from: the template library and the normal report chosen
for a study's kind and body parts, and the phrases radiologists insert (their own and the
department's).

The body parts are the archive's vocabulary (cloudpacs.BodyPart): a consult's parts are
read from its request's part names, else the order it was performed for, else the
series' BodyPartExamined values."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from uuid import UUID

from django.db.models import F, Q, QuerySet
from django.utils.translation import gettext as _

from cloudpacs.models import BodyPart, Order
from cloudpacs.services import body_part_for, body_parts_for_kind
from consults.models import Consult, Phrase, ReportTemplate, report_language
from consults.rules import NotAllowed, WorkflowError, may_write_phrases, may_write_templates
from facilities.models import ExamKind, User
from facilities.services import audit

_SEPARATORS = re.compile(r"[、,，;；/\s]+")


# --- Body parts ------------------------------------------------------------------------------


def parts_named(text: str, kind: str | None = None) -> list[BodyPart]:
    """The vocabulary's parts a free text names ("胸部、腹部", "Chest, Abdomen", "腰椎正侧位"):
    each piece by a part's Chinese or English name or code, else by containing a Chinese name
    of two characters or more; in the order named, each once."""
    vocabulary = body_parts_for_kind(kind)
    found: list[BodyPart] = []
    for piece in _SEPARATORS.split(text or ""):
        piece = piece.strip()
        if not piece:
            continue
        exact = [
            part
            for part in vocabulary
            if piece in (part.name_zh, part.code) or piece.lower() == part.name_en.lower() or piece.upper() == part.code
        ]
        named = exact or [part for part in vocabulary if len(part.name_zh) >= 2 and part.name_zh in piece]
        found.extend(part for part in named if part not in found)
    return found


def body_part_codes(consult: Consult) -> list[str]:
    """The codes of the parts a consult is of: named in its request, else ordered, else in
    its series' BodyPartExamined; [] when none of them says."""
    parts = parts_named(consult.body_part_names, consult.kind)
    if parts:
        return [part.code for part in parts]
    study = consult.study
    if study is None:
        return []
    order = Order.objects.filter(study=study).prefetch_related("body_parts").first()
    if order is not None:
        codes = [part.code for part in order.body_parts.all() if consult.kind in part.kind_list]
        if codes:
            return codes
    codes = []
    for value in study.series.exclude(body_part_examined="").values_list("body_part_examined", flat=True):
        part = body_part_for(value)
        if part is not None and part.code not in codes:
            codes.append(part.code)
    return codes


# --- Templates and the normal report -----------------------------------------------------------


def _preference(template: ReportTemplate) -> tuple[bool, bool, int, int]:
    # The department's before a radiologist's own, the library's before others, the most
    # specific (fewest parts) first.
    return (template.author_id is not None, not template.library_key, len(template.parts.all()), template.pk)


def templates_for(consult: Consult, language: str | None) -> list[ReportTemplate]:
    """The active templates of the consult's kind in the report language, those for its
    body parts first (each marked `fits`)."""
    codes = set(body_part_codes(consult))
    rows = list(
        ReportTemplate.objects.filter(kind=consult.kind, language=report_language(language), is_active=True)
        .prefetch_related("parts")
        .order_by("body_part", "name", "id")
    )
    for row in rows:
        row.fits = bool(codes & {part.code for part in row.parts.all()})  # type: ignore[attr-defined]
    return sorted(rows, key=lambda row: not row.fits)  # type: ignore[attr-defined]


@dataclass
class NormalReport:
    """A normal report for a study: one template's text, or, for several parts, each part's
    findings under its name and the impressions numbered."""

    findings: str
    impression: str
    templates: list[ReportTemplate] = field(default_factory=list)
    # Codes of the study's parts that no template covers: the reader writes those.
    missing: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "findings": self.findings,
            "impression": self.impression,
            "templates": [template.name for template in self.templates],
            "missing": self.missing,
        }


def normal_report(kind: str, body_part_codes: Sequence[str], language: str | None) -> NormalReport | None:
    """The normal report for an exam of `kind` (CT, DR) of these body parts (vocabulary
    codes, e.g. ["CHEST"]) in `language` (zh-hans or en), from the active templates; None
    when no template covers any of the parts."""
    language = report_language(language)
    codes = list(dict.fromkeys(code.strip().upper() for code in body_part_codes if code and code.strip()))
    if not codes:
        return None
    candidates = list(
        ReportTemplate.objects.filter(kind=kind, language=language, is_active=True, parts__code__in=codes)
        .distinct()
        .prefetch_related("parts")
    )
    chosen: list[tuple[str, ReportTemplate]] = []
    missing: list[str] = []
    for code in codes:
        fitting = [row for row in candidates if code in {part.code for part in row.parts.all()}]
        if not fitting:
            missing.append(code)
            continue
        best = min(fitting, key=_preference)
        if best not in [row for _, row in chosen]:
            chosen.append((code, best))
    if not chosen:
        return None
    templates = [row for _, row in chosen]
    if len(chosen) == 1:
        return NormalReport(templates[0].findings, templates[0].impression, templates, missing)
    names = {part.code: part.name(language) for part in BodyPart.objects.filter(code__in=[c for c, _ in chosen])}
    colon = ": " if language == "en" else "："
    findings = "\n\n".join(f"{names.get(code, row.body_part)}{colon}{row.findings}" for code, row in chosen)
    impression = "\n".join(f"{number}. {row.impression}" for number, row in enumerate(templates, start=1))
    return NormalReport(findings, impression, templates, missing)


def normal_report_for(consult: Consult, language: str | None) -> NormalReport | None:
    return normal_report(consult.kind, body_part_codes(consult), language)


def add_template(
    user: User,
    *,
    kind: str,
    body_part: str,
    name: str,
    findings: str,
    impression: str,
    parts: Iterable[BodyPart] = (),
    language: str | None = None,
) -> ReportTemplate:
    """A radiologist's own template, offered for the parts chosen (or else those its label names)."""
    if not may_write_templates(user):
        raise NotAllowed(_("只有诊断医师可以添加报告模板。"))
    if kind not in ExamKind.values:
        raise WorkflowError(_("无效的检查类型。"))
    if not (name.strip() and body_part.strip() and impression.strip()):
        raise WorkflowError(_("请填写名称、部位和诊断意见。"))
    chosen = list(parts) or parts_named(body_part, kind)
    template = ReportTemplate.objects.create(
        kind=kind,
        body_part=body_part.strip(),
        name=name.strip(),
        findings=findings.strip(),
        impression=impression.strip(),
        language=report_language(language),
        author=user,
    )
    template.parts.set(chosen)
    audit(
        "consults.template.created",
        actor=user,
        obj=template,
        name=template.name,
        parts=[part.code for part in chosen],
    )
    return template


# --- Phrases -------------------------------------------------------------------------------------


def phrases_for(user: User, language: str | None, kind: str = "") -> QuerySet[Phrase]:
    """The phrases a radiologist may insert: their own, then the department's; those of
    another exam kind left out."""
    rows = Phrase.objects.filter(is_active=True, language=report_language(language)).filter(
        Q(owner=user) | Q(owner__isnull=True)
    )
    if kind:
        rows = rows.filter(Q(kind="") | Q(kind=kind))
    return rows.order_by(F("owner_id").asc(nulls_last=True), "shortcut", "id")


def add_phrase(user: User, *, text: str, shortcut: str = "", kind: str = "", language: str | None = None) -> Phrase:
    """A phrase of the radiologist's own bank; a shortcut is theirs once per language."""
    if not may_write_phrases(user):
        raise NotAllowed(_("只有诊断医师可以添加常用语。"))
    language = report_language(language)
    shortcut = shortcut.strip().lower()
    if shortcut and Phrase.objects.filter(owner=user, language=language, shortcut=shortcut, is_active=True).exists():
        raise WorkflowError(_("缩写“%(shortcut)s”已用于您的另一条常用语。") % {"shortcut": shortcut})
    phrase = Phrase.objects.create(owner=user, text=text.strip(), shortcut=shortcut, kind=kind, language=language)
    audit("consults.phrase.created", actor=user, obj=phrase, shortcut=shortcut)
    return phrase


def delete_phrase(user: User, phrase_uuid: UUID) -> None:
    """Remove one of the radiologist's own phrases; the department's are the administrators'."""
    phrase = Phrase.objects.filter(uuid=phrase_uuid, owner=user).first()
    if phrase is None:
        raise NotAllowed(_("只能删除自己的常用语。"))
    audit("consults.phrase.deleted", actor=user, obj=phrase, shortcut=phrase.shortcut)
    phrase.delete()
