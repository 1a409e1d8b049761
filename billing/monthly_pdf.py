"""The monthly report printed: one A4 page in the embedded CJK font of the consult reports
(consults.pdf.register_font), with the headline figures beside the month before and the
same month a year earlier, two small charts (exams by township, exams in the last twelve
months) and the townships' table. billing.monthly gathers the figures."""

from __future__ import annotations

import io
from datetime import date, datetime
from decimal import Decimal
from xml.sax.saxutils import escape

from django.utils import timezone, translation
from django.utils.translation import gettext as _
from reportlab.graphics.charts.barcharts import VerticalBarChart
from reportlab.graphics.charts.legends import Legend
from reportlab.graphics.shapes import Drawing, String
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from billing import formatting
from billing.reports.filters import month_end
from billing.reports.monthly import MonthFigures
from consults.models import Priority
from consults.pdf import register_font
from facilities.models import ExamKind, User

INK = colors.HexColor("#1f2933")
MUTED = colors.HexColor("#616e7c")
LINE = colors.HexColor("#cbd2d9")
BRAND = colors.HexColor("#1d6fa5")
KIND_COLOURS = {ExamKind.CT: colors.HexColor("#1d6fa5"), ExamKind.DR: colors.HexColor("#f0a202")}
WIDTH = 180 * mm


# No figure is printed as the pages print it (formatting.NONE, "-"): a share or mean of
# nothing, and a table's count or sum with nothing behind it (a DR-only township's CT, as
# the volume page's table). A total of the month stays a number, 0 when there was none.


def percent(share: float | None) -> str:
    return formatting.percent(share)


def count(n: int) -> str:
    """A table cell's count: "-" when nothing was counted, as on the pages."""
    return formatting.number(n) if n else formatting.NONE


def change(share: float | None) -> str:
    """A growth as "+3.2 %" or "-1.5 %"; "-" where there was nothing before."""
    if share is None:
        return formatting.NONE
    text = formatting.percent(abs(share))
    # An ASCII minus: the embedded font has no U+2212.
    return f"+{text}" if share >= 0 else f"-{text}"


def minutes(value: float | None) -> str:
    return formatting.number(value, 1)


def month_label(month: date) -> str:
    return _("%(year)s 年 %(month)s 月") % {"year": month.year, "month": month.month}


def render_monthly_pdf(figures: MonthFigures, *, made_at: datetime, made_by: User | None, language: str) -> bytes:
    font = register_font()
    with translation.override(language):
        return _render(figures, made_at, made_by, font)


def _styles(font: str) -> dict[str, ParagraphStyle]:
    base = ParagraphStyle("base", fontName=font, fontSize=9, leading=12, wordWrap="CJK", textColor=INK)
    return {
        "base": base,
        "title": ParagraphStyle("title", parent=base, fontSize=17, leading=22, alignment=1),
        "subtitle": ParagraphStyle("subtitle", parent=base, fontSize=11, leading=15, alignment=1, textColor=MUTED),
        "heading": ParagraphStyle("heading", parent=base, fontSize=10.5, leading=14, spaceBefore=3, spaceAfter=2),
        "label": ParagraphStyle("label", parent=base, fontSize=8.5, leading=11, textColor=MUTED),
        "label_num": ParagraphStyle("label_num", parent=base, fontSize=8.5, leading=11, textColor=MUTED, alignment=2),
        "value": ParagraphStyle("value", parent=base, fontSize=15, leading=19),
        "small": ParagraphStyle("small", parent=base, fontSize=7.5, leading=10, textColor=MUTED),
        "cell": ParagraphStyle("cell", parent=base, fontSize=9, leading=12),
        "num": ParagraphStyle("num", parent=base, fontSize=9, leading=12, alignment=2),
    }


def _headline(figures: MonthFigures, s: dict[str, ParagraphStyle]) -> Table:
    kinds = figures.kinds
    previous, last_year = figures.previous, figures.last_year

    def compare(mom: float | None, yoy: float | None) -> str:
        return _("环比 %(mom)s · 同比 %(yoy)s") % {"mom": change(mom), "yoy": change(yoy)}

    t = figures.turnaround
    boxes = [
        (
            _("检查量（人次）"),
            formatting.number(figures.total_exams),
            " · ".join(f"{ExamKind(k).label} {formatting.number(figures.exams[k])}" for k in kinds),
            compare(previous.exams_growth, last_year.exams_growth),
        ),
        (
            _("为群众节省（元）"),
            formatting.yuan(figures.saving),
            _("%(wan)s 万元 · 已计费 %(n)s 人次")
            % {
                "wan": formatting.wan(figures.saving),
                "n": formatting.number(figures.ledger_entries),
            },
            compare(previous.saving_growth, last_year.saving_growth),
        ),
        (
            _("平均会诊时间（分钟）"),
            minutes(t.mean),
            _("中位数 %(median)s（%(q1)s–%(q3)s）")
            % {
                "median": minutes(t.median),
                "q1": minutes(t.q1),
                "q3": minutes(t.q3),
            },
            _("已签发 %(n)s 例") % {"n": formatting.number(t.n)},
        ),
        (
            _("时限内完成率"),
            percent(figures.within_share),
            " · ".join(
                f"{ExamKind(k).label} {percent(w / n if n else None)}"
                for k in kinds
                for w, n in [figures.within_by_kind.get(k, (0, 0))]
            ),
            _("%(within)s / %(n)s 例在时限内签发")
            % {
                "within": formatting.number(figures.within),
                "n": formatting.number(figures.signed),
            },
        ),
    ]
    cells = [
        [
            [
                Paragraph(escape(label), s["label"]),
                Paragraph(escape(value), s["value"]),
                Paragraph(escape(detail), s["small"]),
                Paragraph(escape(extra), s["small"]),
            ]
            for label, value, detail, extra in boxes
        ]
    ]
    table = Table(cells, colWidths=[WIDTH / 4] * 4)
    table.setStyle(
        TableStyle(
            [
                ("BOX", (0, 0), (-1, -1), 0.6, LINE),
                ("INNERGRID", (0, 0), (-1, -1), 0.6, LINE),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("LEFTPADDING", (0, 0), (-1, -1), 6),
                ("TOPPADDING", (0, 0), (-1, -1), 4),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 5),
            ]
        )
    )
    return table


def _bar_chart(
    title: str,
    categories: list[str],
    series: list[tuple[str, list[int], colors.Color]],
    font: str,
    *,
    width: float,
    height: float,
    angle: int = 0,
) -> Drawing:
    drawing = Drawing(width, height)
    drawing.add(String(0, height - 10, title, fontName=font, fontSize=9, fillColor=INK))
    chart = VerticalBarChart()
    chart.x, chart.y = 26, 30 if angle else 20
    chart.width, chart.height = width - 34, height - chart.y - 30
    chart.data = [values for _name, values, _colour in series] or [[0]]
    chart.categoryAxis.categoryNames = categories
    chart.categoryAxis.labels.fontName = font
    chart.categoryAxis.labels.fontSize = 7
    chart.categoryAxis.labels.angle = angle
    if angle:
        chart.categoryAxis.labels.boxAnchor = "ne"
        chart.categoryAxis.labels.dx, chart.categoryAxis.labels.dy = 4, -2
    chart.categoryAxis.strokeColor = LINE
    chart.valueAxis.labels.fontName = font
    chart.valueAxis.labels.fontSize = 7
    chart.valueAxis.valueMin = 0
    chart.valueAxis.strokeColor = LINE
    chart.valueAxis.gridStrokeColor = colors.HexColor("#eef1f4")
    chart.valueAxis.visibleGrid = True
    chart.valueAxis.labelTextFormat = lambda v: formatting.number(v)
    top = max((max(values) for _n, values, _c in series if values), default=0)
    if top <= 5:
        chart.valueAxis.valueMax = 5
        chart.valueAxis.valueStep = 1
    chart.groupSpacing = 3
    chart.barSpacing = 0.5
    for i, (_name, _values, colour) in enumerate(series):
        chart.bars[i].fillColor = colour
        chart.bars[i].strokeColor = None
    drawing.add(chart)
    if len(series) > 1:
        legend = Legend()
        legend.x, legend.y = width - 8, height - 6
        legend.boxAnchor = "ne"
        legend.alignment = "right"
        legend.columnMaximum = 1
        legend.fontName = font
        legend.fontSize = 7
        legend.dx, legend.dy = 6, 6
        legend.deltax = 34
        legend.colorNamePairs = [(colour, name) for name, _v, colour in series]
        drawing.add(legend)
    return drawing


def _charts(figures: MonthFigures, font: str) -> Table:
    width, height = WIDTH / 2 - 3 * mm, 60 * mm
    rows = figures.townships
    names = [t.facility.short_name_in() if t.facility is not None else _("其余") for t in rows]
    by_township = _bar_chart(
        _("各乡镇检查量（人次）"),
        names,
        [(str(ExamKind(k).label), [t.exams.get(k, 0) for t in rows], KIND_COLOURS[ExamKind(k)]) for k in figures.kinds],
        font,
        width=width,
        height=height,
        angle=30 if len(rows) > 8 else 0,
    )
    first, last = figures.trend[0][0], figures.trend[-1][0]
    trend = _bar_chart(
        _("近 12 个月检查量（人次，%(first)s–%(last)s）") % {"first": f"{first:%Y.%m}", "last": f"{last:%Y.%m}"},
        [_("%(month)s月") % {"month": month.month} for month, _n, _s in figures.trend],
        [(_("检查量"), [n for _m, n, _s in figures.trend], BRAND)],
        font,
        width=width,
        height=height,
    )
    table = Table([[by_township, trend]], colWidths=[WIDTH / 2, WIDTH / 2])
    table.setStyle(TableStyle([("LEFTPADDING", (0, 0), (-1, -1), 0), ("VALIGN", (0, 0), (-1, -1), "TOP")]))
    return table


def _townships(figures: MonthFigures, s: dict[str, ParagraphStyle]) -> Table:
    kinds = figures.kinds
    head = [
        _("乡镇"),
        *(str(ExamKind(k).label) for k in kinds),
        _("合计"),
        _("节省"),
        _("已签发"),
        _("平均会诊时间"),
        _("时限内完成率"),
    ]
    rows: list[list[Paragraph]] = [
        [Paragraph(escape(h), s["label"] if i == 0 else s["label_num"]) for i, h in enumerate(head)]
    ]

    def line(label: str, exams: dict[str, int], saving: Decimal, signed: int, mean: float | None, share: float | None):
        total: int = sum(exams.values())
        return [
            Paragraph(escape(label), s["cell"]),
            *(Paragraph(count(exams.get(k, 0)), s["num"]) for k in kinds),
            Paragraph(count(total), s["num"]),
            Paragraph(formatting.yuan(saving) if saving or total else formatting.NONE, s["num"]),
            Paragraph(count(signed), s["num"]),
            Paragraph(minutes(mean), s["num"]),
            Paragraph(percent(share), s["num"]),
        ]

    for t in figures.townships:
        label = t.facility.short_name_in() if t.facility is not None else _("其余 %(n)s 个乡镇") % {"n": t.label}
        rows.append(line(label, t.exams, t.saving, t.signed, t.mean_minutes, t.within_share))
    rows.append(
        line(_("合计"), figures.exams, figures.saving, figures.signed, figures.turnaround.mean, figures.within_share)
    )
    widths = [30 * mm, *([16 * mm] * len(kinds)), 18 * mm, 28 * mm, 18 * mm, 28 * mm]
    widths.append(WIDTH - sum(widths))
    table = Table(rows, colWidths=widths, repeatRows=1)
    table.setStyle(
        TableStyle(
            [
                ("LINEABOVE", (0, 0), (-1, 0), 0.8, INK),
                ("LINEBELOW", (0, 0), (-1, 0), 0.5, LINE),
                ("LINEBELOW", (0, 1), (-1, -3), 0.25, LINE),
                ("LINEABOVE", (0, -1), (-1, -1), 0.8, INK),
                ("LINEBELOW", (0, -1), (-1, -1), 0.8, INK),
                ("BACKGROUND", (0, -1), (-1, -1), colors.HexColor("#f5f7fa")),
                ("TOPPADDING", (0, 0), (-1, -1), 1.8),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 1.8),
                ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
            ]
        )
    )
    return table


def _limits_and_travel(figures: MonthFigures, s: dict[str, ParagraphStyle]) -> Table:
    """Beside each other: the share signed within the limit by priority and kind, and what
    the patients saved (per exam, per patient, the trips to the county not made)."""
    limits = figures.limits
    kinds = limits.kinds or list(figures.kinds)

    def cell(c: object) -> str:
        if c is None or not getattr(c, "signed", 0):
            return formatting.NONE
        return percent(c.within_limit / c.signed)  # type: ignore[attr-defined]

    rows = [
        [Paragraph(escape(_("优先级")), s["label"])]
        + [Paragraph(escape(str(ExamKind(k).label)), s["label_num"]) for k in kinds]
        + [Paragraph(escape(_("合计")), s["label_num"])]
    ]
    for p in limits.priorities:
        rows.append(
            [Paragraph(escape(str(Priority(p).label)), s["cell"])]
            + [Paragraph(cell(limits.cells.get((p, k))), s["num"]) for k in kinds]
            + [Paragraph(cell(limits.by_priority.get(p)), s["num"])]
        )
    rows.append(
        [Paragraph(escape(_("合计")), s["cell"])]
        + [Paragraph(cell(limits.by_kind.get(k)), s["num"]) for k in kinds]
        + [Paragraph(cell(limits.total), s["num"])]
    )
    left_width = WIDTH * 0.55
    limit_table = Table(rows, colWidths=[left_width * 0.22] + [left_width * 0.78 / (len(kinds) + 1)] * (len(kinds) + 1))
    limit_table.setStyle(
        TableStyle(
            [
                ("LINEABOVE", (0, 0), (-1, 0), 0.8, INK),
                ("LINEBELOW", (0, 0), (-1, 0), 0.5, LINE),
                ("LINEABOVE", (0, -1), (-1, -1), 0.5, LINE),
                ("LINEBELOW", (0, -1), (-1, -1), 0.8, INK),
                ("TOPPADDING", (0, 0), (-1, -1), 2),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 2),
            ]
        )
    )
    t = figures.travel
    lines = [
        _("每人次节省 %(yuan)s 元，每位患者 %(patient)s 元。")
        % {"yuan": formatting.yuan(t.saving_per_exam), "patient": formatting.yuan(t.saving_per_patient)},
        _("免去往返县医院 %(n)s 人次：路费约 %(cost)s 元，路程 %(km)s 公里，时间 %(hours)s 小时。")
        % {
            "n": formatting.number(t.exams),
            "cost": formatting.yuan(t.travel_cost),
            "km": formatting.number(t.travel_km),
            "hours": formatting.number(t.travel_hours, 1),
        },
    ]
    if t.unknown:
        lines.append(_("%(n)s 个乡镇未登记到县医院的路程，未计入。") % {"n": len(t.unknown)})
    travel_cell = [Paragraph(escape(_("群众少跑的路")), s["heading"])] + [
        Paragraph(escape(line), s["cell"]) for line in lines
    ]
    limit_cell = [Paragraph(escape(_("时限内完成率（按优先级与检查类型）")), s["heading"]), limit_table]
    table = Table([[limit_cell, travel_cell]], colWidths=[WIDTH * 0.58, WIDTH * 0.42])
    table.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("LEFTPADDING", (0, 0), (0, -1), 0)]))
    return table


def _render(figures: MonthFigures, made_at: datetime, made_by: User | None, font: str) -> bytes:
    s = _styles(font)
    first = figures.month
    county = figures.county.name_in() if figures.county is not None else ""
    title = _("%(county)s远程影像会诊月报") % {"county": county or _("县域")}
    story: list = [
        Paragraph(escape(title), s["title"]),
        Paragraph(
            escape(
                _("%(month)s（%(first)s 至 %(last)s，按检查日期）")
                % {"month": month_label(first), "first": f"{first:%Y-%m-%d}", "last": f"{month_end(first):%Y-%m-%d}"}
            ),
            s["subtitle"],
        ),
        Spacer(1, 4 * mm),
        _headline(figures, s),
        Paragraph(
            escape(
                _(
                    "上月 %(prev)s：检查 %(prev_exams)s 人次，节省 %(prev_saving)s 元；"
                    "上年同月 %(ly)s：检查 %(ly_exams)s 人次，节省 %(ly_saving)s 元。"
                )
                % {
                    "prev": month_label(figures.previous.month),
                    "prev_exams": formatting.number(figures.previous.exams),
                    "prev_saving": formatting.yuan(figures.previous.saving),
                    "ly": month_label(figures.last_year.month),
                    "ly_exams": formatting.number(figures.last_year.exams),
                    "ly_saving": formatting.yuan(figures.last_year.saving),
                }
            ),
            s["small"],
        ),
        Spacer(1, 3 * mm),
        _charts(figures, font),
        Spacer(1, 2 * mm),
        Paragraph(escape(_("各乡镇（检查量：人次；节省：元；会诊时间：分钟）")), s["heading"]),
        _townships(figures, s),
        Spacer(1, 3 * mm),
        _limits_and_travel(figures, s),
        Spacer(1, 3 * mm),
        Paragraph(
            escape(
                _(
                    "口径：检查量为未取消的会诊；节省费用取自节省台账（县医院价与乡镇卫生院价之差，按部位计）；"
                    "会诊时间为到达至签发；时限内为在诊断时限（到达时按优先级与检查类型确定）前签发。"
                    "均按检查日期统计。环比为与上月相比，同比为与上年同月相比。"
                )
            ),
            s["small"],
        ),
        Paragraph(
            escape(
                _("生成时间：%(at)s · 生成：%(by)s · 云影 · 第 1 页，共 1 页")
                % {
                    "at": timezone.localtime(made_at).strftime("%Y-%m-%d %H:%M"),
                    "by": str(made_by) if made_by is not None else _("每月定时任务"),
                }
            ),
            s["small"],
        ),
    ]
    buffer = io.BytesIO()
    document = SimpleDocTemplate(
        buffer,
        pagesize=A4,
        leftMargin=15 * mm,
        rightMargin=15 * mm,
        topMargin=14 * mm,
        bottomMargin=12 * mm,
        title=title,
        subject=f"{first:%Y-%m}",
        author=county,
        creator="Yunying",
    )
    document.build(story)
    return buffer.getvalue()
