"""The turnaround report: its rows and tables, from the rollup or (source="raw") the raw rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

from django.utils.translation import gettext_lazy as _

from billing import formatting
from billing.reports.common import fixed, township_order
from billing.reports.filters import Filters
from billing.reports.measures import (
    HISTOGRAM_BIN_MINUTES,
    HISTOGRAM_BINS,
    PERIODS,
    STAGES,
    Group,
    Summary,
)
from billing.reports.turnaround_raw import signed_groups
from billing.reports.turnaround_rollup import rollup_groups
from facilities.models import ExamKind, Facility, User
from facilities.names import by_pinyin


@dataclass
class TurnaroundRow:
    key: str
    label: str
    consult: Summary
    stages: dict[str, Summary]
    within_limit: int
    drill: dict[str, str] = field(default_factory=dict)
    href: str = ""  # set by the view: the exams behind the row
    text: dict[str, Any] = field(default_factory=dict)  # set by the view: cells()
    partial: tuple[date, date] | None = None  # set by the view: the days a partial period covers
    facility: Facility | None = None  # of a row by township
    html: str = ""  # set by the view: the table's row
    stages_html: str = ""  # set by the view: the row of the stages' table

    @property
    def n(self) -> int:
        return self.consult.n

    def cells(self) -> dict[str, Any]:
        """The row's figures as the page prints them, formatted here rather than by a
        dozen template filters a row (a province's table has 1,100 rows)."""

        def mean_sd(s: Summary) -> str:
            return f"{fixed(s.mean)} ± {fixed(s.sd) or '–'}" if s.n else "–"

        def median_iqr(s: Summary) -> str:
            return f"{fixed(s.median)} ({fixed(s.q1)}–{fixed(s.q3)})" if s.n else "–"

        c = self.consult
        return {
            "n": formatting.number(self.n),
            "mean": fixed(c.mean),
            "sd": fixed(c.sd) or "–",
            "median": median_iqr(c) if c.n else " (–)",
            "share": f"{fixed(self.share_percent, 1)} %" if self.n else "",
            "stages": [(mean_sd(self.stages[key]), median_iqr(self.stages[key])) for key, *_rest in STAGES],
        }

    @property
    def share_within_limit(self) -> float | None:
        return self.within_limit / self.n if self.n else None

    @property
    def share_percent(self) -> float | None:
        share = self.share_within_limit
        return None if share is None else share * 100

    @property
    def stage_list(self) -> list[tuple[str, Summary]]:
        return [(str(label), self.stages[key]) for key, label, _a, _b in STAGES]


@dataclass
class Turnaround:
    total: TurnaroundRow
    by_township: list[TurnaroundRow]
    by_radiologist: list[TurnaroundRow]
    by_kind: list[TurnaroundRow]
    by_period: list[TurnaroundRow]
    period: str
    histogram: list[tuple[str, int]]

    @property
    def figure2(self) -> list[TurnaroundRow]:
        """Mean consult time by township, shortest first, as the paper draws Figure 2."""
        return sorted((r for r in self.by_township if r.n), key=lambda r: r.consult.mean or 0.0)

    @property
    def figure3(self) -> list[TurnaroundRow]:
        """Consults per radiologist, most first."""
        return sorted(self.by_radiologist, key=lambda r: -r.n)


def period_drill(key: str, period: str) -> dict[str, str]:
    if period == "month":
        return {"month": key}
    if period == "quarter":
        year, quarter = key.split("-Q")
        return {"year": year, "quarter": quarter}
    return {"year": key}


def turnaround(filters: Filters, period: str = "year", *, source: str = "rollup") -> Turnaround:
    """The turnaround page's figures, from the daily rollup (quartiles from merged
    histograms, within billing.histogram.RELATIVE_ERROR) or, with source="raw", from every
    signed consult (exact quartiles; the reference the tests hold the rollup to)."""
    if period not in PERIODS:
        raise ValueError(f"unknown period {period!r}")
    groups, bins = (rollup_groups if source == "rollup" else signed_groups)(filters, period)
    empty = Group(Summary(), {k: Summary() for k, *_rest in STAGES}, 0)

    def row(kind: str, key: str, label: str, drill: dict[str, str]) -> TurnaroundRow:
        g = groups.get((kind, key), empty)
        return TurnaroundRow(key, label, g.consult, g.stages, g.within_limit, drill)

    def by_township(f: Facility) -> TurnaroundRow:
        township = row("facility", str(f.pk), f.short_name, {"township": str(f.uuid)})
        township.facility = f
        return township

    facility_ids = [int(k) for (kind, k) in groups if kind == "facility"]
    facilities = township_order(Facility.objects.filter(pk__in=facility_ids))
    radiologist_ids = [int(k) for (kind, k) in groups if kind == "radiologist" and k != "None"]
    radiologists = by_pinyin(User.objects.filter(pk__in=radiologist_ids))
    kinds = sorted(k for (kind, k) in groups if kind == "kind")
    periods = sorted(k for (kind, k) in groups if kind == "period")
    histogram = [
        (
            f"≥{b * HISTOGRAM_BIN_MINUTES}"
            if b == HISTOGRAM_BINS
            else f"{b * HISTOGRAM_BIN_MINUTES}–{(b + 1) * HISTOGRAM_BIN_MINUTES}",
            n,
        )
        for b, n in bins
    ]
    return Turnaround(
        total=row("all", "", str(_("合计")), {}),
        by_township=[by_township(f) for f in facilities],
        by_radiologist=[row("radiologist", str(u.pk), str(u), {"radiologist": str(u.uuid)}) for u in radiologists],
        by_kind=[row("kind", k, str(ExamKind(k).label), {"modality": k}) for k in kinds],
        by_period=[row("period", p, p, period_drill(p, period)) for p in periods],
        period=period,
        histogram=histogram,
    )
