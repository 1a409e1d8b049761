"""The printable report: a PDF with the county hospital's header, the township's name, the
findings and impression in an embedded CJK TrueType font, the signers and their times, the
addenda, the critical findings, and a QR code to the public page that proves it genuine
(consults.verification).

reportlab embeds TrueType outlines only (not the CFF outlines of Noto CJK), hence the
WenQuanYi Zen Hei font from fonts-wqy-zenhei (settings.REPORT_FONT_PATH)."""

from __future__ import annotations

import io
from datetime import date, datetime
from pathlib import Path
from xml.sax.saxutils import escape

from django.conf import settings
from django.utils import timezone, translation
from django.utils.translation import gettext as _
from reportlab.graphics.barcode.qr import QrCodeWidget
from reportlab.graphics.shapes import Drawing
from reportlab.lib import colors, textsplit
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.platypus import HRFlowable, Image, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle, paragraph

from cloudpacs.descriptions import description_in
from cloudpacs.personname import format_person_name, sex_label
from cloudpacs.services import key_image_pictures
from consults.models import Consult, Report
from consults.rules import body_part_label
from consults.verification import verification_for, verification_url
from facilities.services import county_hospital

FONT_NAME = "YunyingCJK"
# Tried in order after settings.REPORT_FONT_PATH: TrueType CJK fonts of Debian and others.
_FALLBACK_FONTS = (
    Path("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc"),
    Path("/usr/share/fonts/truetype/arphic/uming.ttc"),
    Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"),
)


class FontMissing(RuntimeError):
    """No TrueType CJK font is installed: install fonts-wqy-zenhei or set REPORT_FONT_PATH."""


def register_font() -> str:
    """The embedded CJK font's name, registered with reportlab once (the monthly report uses it too)."""
    if FONT_NAME in pdfmetrics.getRegisteredFontNames():
        return FONT_NAME
    candidates = [Path(getattr(settings, "REPORT_FONT_PATH", "")), *_FALLBACK_FONTS]
    for path in candidates:
        if path.is_file():
            pdfmetrics.registerFont(TTFont(FONT_NAME, str(path), subfontIndex=0))
            return FONT_NAME
    raise FontMissing(f"no TrueType CJK font among {', '.join(str(p) for p in candidates)}")


# Chinese typesetting keeps closing punctuation with the text before it: a full-width
# comma, colon or closing bracket never starts a line (避头点). reportlab's CJK wrapping
# hangs the characters of ALL_CANNOT_START in the margin instead of carrying them over,
# but its list lacks the full-width forms of the common marks; they are added here, once.
_NOT_AT_LINE_START = "，。、；：？！）》」』】〉〕…—’”"
# Both wrapping paths read it: textsplit's for a paragraph of one run of text, paragraph's
# for one with line breaks or markup.
textsplit.ALL_CANNOT_START = "".join(dict.fromkeys(textsplit.ALL_CANNOT_START + _NOT_AT_LINE_START))
paragraph.ALL_CANNOT_START = textsplit.ALL_CANNOT_START


def _when(moment: datetime | None) -> str:
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M") if moment else "—"


def _day(value: date | None) -> str:
    return value.strftime("%Y-%m-%d") if value else "—"


def _text(value: str) -> str:
    return escape(value or "—").replace("\n", "<br/>")


KEY_IMAGES_PER_ROW = 4
KEY_IMAGE_SIZE = 38 * mm


def _picture_table(pictures: list[bytes]) -> Table:
    cells = []
    for picture in pictures:
        image = Image(io.BytesIO(picture))
        scale = min(KEY_IMAGE_SIZE / image.imageWidth, KEY_IMAGE_SIZE / image.imageHeight)
        image.drawWidth, image.drawHeight = image.imageWidth * scale, image.imageHeight * scale
        cells.append(image)
    rows = [cells[i : i + KEY_IMAGES_PER_ROW] for i in range(0, len(cells), KEY_IMAGES_PER_ROW)]
    rows[-1] += [""] * (KEY_IMAGES_PER_ROW - len(rows[-1]))
    return Table(
        rows,
        colWidths=[KEY_IMAGE_SIZE + 3 * mm] * KEY_IMAGES_PER_ROW,
        style=TableStyle([("ALIGN", (0, 0), (-1, -1), "CENTER"), ("VALIGN", (0, 0), (-1, -1), "MIDDLE")]),
        hAlign="LEFT",
    )


def render_report_pdf(consult: Consult, report: Report, language: str | None = None) -> bytes:
    """The signed report as PDF bytes."""
    font = register_font()
    with translation.override(language or settings.LANGUAGE_CODE):
        return _render(consult, report, font)


def _render(consult: Consult, report: Report, font: str) -> bytes:
    base = ParagraphStyle("base", fontName=font, fontSize=10.5, leading=16, wordWrap="CJK")
    title = ParagraphStyle("title", parent=base, fontSize=18, leading=24, alignment=1)
    subtitle = ParagraphStyle("subtitle", parent=base, fontSize=12, leading=18, alignment=1)
    heading = ParagraphStyle("heading", parent=base, fontSize=12, leading=18, spaceBefore=8, spaceAfter=2)
    small = ParagraphStyle("small", parent=base, fontSize=8.5, leading=12, textColor=colors.grey)
    critical_heading = ParagraphStyle("critical_heading", parent=heading, textColor=colors.HexColor("#b3261e"))
    critical = ParagraphStyle("critical", parent=base, textColor=colors.HexColor("#b3261e"))

    county = county_hospital()
    study = consult.study
    patient = study.patient if study is not None else None
    story: list = [
        Paragraph(escape(county.name_in() if county else _("县医院")), title),
        Paragraph(_("医学影像诊断报告"), subtitle),
        Paragraph(escape(_("远程会诊 · 申请机构：%(facility)s") % {"facility": consult.facility.name_in()}), subtitle),
        Spacer(1, 4 * mm),
        HRFlowable(width="100%", thickness=0.8, color=colors.black),
        Spacer(1, 2 * mm),
    ]

    facts = [
        (_("姓名"), format_person_name(patient, empty="—"), _("患者 ID"), patient.patient_id if patient else "—"),
        (
            _("性别"),
            sex_label(patient.sex if patient else ""),
            _("出生日期"),
            _day(patient.birth_date) if patient else "—",
        ),
        (
            _("检查类型"),
            consult.get_kind_display(),
            _("检查部位"),
            # As the pages name it, in the report's language; else the console's words.
            body_part_label(consult) or description_in(study.description if study else "") or "—",
        ),
        (
            _("检查日期"),
            _day(consult.exam_date),
            _("检查号"),
            (study.accession_number if study else "") or "—",
        ),
        (_("优先级"), consult.get_priority_display(), _("到达时间"), _when(consult.arrived_at)),
    ]
    table = Table(
        [[Paragraph(escape(str(cell)), base) for cell in row] for row in facts],
        colWidths=[22 * mm, 58 * mm, 22 * mm, 58 * mm],
    )
    table.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("TEXTCOLOR", (0, 0), (0, -1), colors.grey)]))
    story += [table, Spacer(1, 2 * mm)]

    if consult.clinical_history:
        story += [Paragraph(_("病史摘要"), heading), Paragraph(_text(consult.clinical_history), base)]
    story += [
        Paragraph(_("影像所见"), heading),
        Paragraph(_text(report.findings), base),
        Paragraph(_("诊断意见"), heading),
        Paragraph(_text(report.impression), base),
    ]
    pictures = key_image_pictures(study) if study is not None else []
    if pictures:
        # The key images the reader marked in the viewer (the study's key object selection).
        story.append(Paragraph(_("关键图像"), heading))
        story.append(_picture_table(pictures))

    findings = list(consult.critical_findings.select_related("flagged_by", "acknowledged_by"))
    if findings:
        story.append(Paragraph(_("危急值"), critical_heading))
        for finding in findings:
            story.append(Paragraph(_text(finding.description), critical))
            said = f"{finding.flagged_by} · {_when(finding.flagged_at)}"
            if finding.acknowledged_at:
                said += " · " + _("%(who)s 已于 %(when)s 确认") % {
                    "who": finding.acknowledged_by or "—",
                    "when": _when(finding.acknowledged_at),
                }
            story.append(Paragraph(escape(said), small))

    addenda = list(report.addenda.select_related("author"))
    if addenda:
        story.append(Paragraph(_("补充报告"), heading))
        for addendum in addenda:
            story.append(Paragraph(_text(addendum.text), base))
            story.append(Paragraph(escape(f"{addendum.author} · {_when(addendum.created_at)}"), small))

    signers = [[_("报告医师"), str(report.author), "", ""]]
    if report.preliminary_by:
        signers.append([_("初诊医师"), str(report.preliminary_by), _("初诊时间"), _when(consult.preliminary_at)])
        signers.append([_("审核医师"), str(report.signed_by or "—"), _("审核时间"), _when(report.signed_at)])
    else:
        signers.append([_("签发医师"), str(report.signed_by or "—"), _("签发时间"), _when(report.signed_at)])
    sign_table = Table(
        [[Paragraph(escape(cell), base) for cell in row] for row in signers],
        colWidths=[22 * mm, 48 * mm, 22 * mm, 40 * mm],
    )

    url = verification_url(verification_for(report))
    qr = QrCodeWidget(url)
    left, bottom, right, top = qr.getBounds()
    size = 26 * mm
    drawing = Drawing(size, size, transform=[size / (right - left), 0, 0, size / (top - bottom), 0, 0])
    drawing.add(qr)
    footer = Table(
        [[sign_table, drawing]],
        colWidths=[134 * mm, 30 * mm],
        style=TableStyle([("VALIGN", (0, 0), (-1, -1), "BOTTOM")]),
    )
    story += [
        Spacer(1, 6 * mm),
        HRFlowable(width="100%", thickness=0.5, color=colors.grey),
        footer,
        Paragraph(escape(_("扫码验证报告真伪：%(url)s") % {"url": url}), small),
        Paragraph(
            escape(_("本报告仅供临床参考。打印时间：%(at)s") % {"at": _when(timezone.now())}),
            small,
        ),
    ]

    buffer = io.BytesIO()
    document = SimpleDocTemplate(
        buffer,
        pagesize=A4,
        leftMargin=20 * mm,
        rightMargin=20 * mm,
        topMargin=18 * mm,
        bottomMargin=18 * mm,
        title=_("医学影像诊断报告"),
        author=county.name if county else "",
        subject=str(consult.uuid),
        creator="Yunying",
    )
    document.build(story)
    return buffer.getvalue()
