"""The dashboards' reports, gathered for the pages, the exports and the bench: each lives in
its own module of billing/reports/, which this module only re-exports.

- reports/filters.py: `Filters`, the one filter builder (Q objects and SQL), and which
  rollup rows cover a date range;
- reports/savings.py: the ledger's totals, the editions that priced them;
- reports/volume.py: exams per township and year (the paper's Tables 1-2);
- reports/turnaround.py: the turnaround page's rows, from the rollup
  (reports/turnaround_rollup.py) or from every signed consult (reports/turnaround_raw.py,
  the exact oracle the tests hold the rollup to);
- reports/common.py: money, number format, township order, partial periods;
- reports/growth.py: exams and savings year over year and month over month;
- reports/workload.py: each radiologist's reports by month (weekday days, nights,
  weekends) with their turnaround, and the share within the time limit by priority and kind;
- reports/travel.py: savings per exam and per patient, and the patients' travel saved.

Which exams each page counts:
- volume: every consult that is not cancelled, by exam date;
- turnaround: consults with a signed report (arrival to signature, the paper's Figure 2);
- savings: ledger entries by exam date, reversals included (they are negative)."""

from __future__ import annotations

from billing.reports.common import (
    ZERO,
    fixed,
    money,
    partial_periods,
    period_bounds,
    recorded_span,
    township_order,
    wan,
)
from billing.reports.filters import Filters, RollupSplit, rollup_parts, rollup_split
from billing.reports.growth import Growth, GrowthRow, growth, growth_percent
from billing.reports.measures import HISTOGRAM_BIN_MINUTES, HISTOGRAM_BINS, PERIODS, STAGES, Summary
from billing.reports.savings import (
    EditionUse,
    SavingRow,
    Savings,
    TownshipSaving,
    editions,
    ledger_entries,
    savings,
    unconfirmed_parts,
)
from billing.reports.travel import TownshipTravel, Travel, billed_exams, travel
from billing.reports.turnaround import Turnaround, TurnaroundRow, period_drill, turnaround
from billing.reports.turnaround_raw import grouped_summaries, summarize
from billing.reports.volume import VolumeRow, VolumeTable, exam_count, volume, volume_consults
from billing.reports.workload import LimitCell, WithinLimit, Work, Workload, night_label, within_limit, workload

__all__ = [
    "HISTOGRAM_BINS",
    "HISTOGRAM_BIN_MINUTES",
    "PERIODS",
    "STAGES",
    "ZERO",
    "EditionUse",
    "Filters",
    "Growth",
    "GrowthRow",
    "LimitCell",
    "RollupSplit",
    "SavingRow",
    "Savings",
    "Summary",
    "TownshipSaving",
    "TownshipTravel",
    "Travel",
    "Turnaround",
    "TurnaroundRow",
    "VolumeRow",
    "VolumeTable",
    "WithinLimit",
    "Work",
    "Workload",
    "billed_exams",
    "editions",
    "exam_count",
    "fixed",
    "grouped_summaries",
    "growth",
    "growth_percent",
    "ledger_entries",
    "money",
    "night_label",
    "partial_periods",
    "period_bounds",
    "period_drill",
    "recorded_span",
    "rollup_parts",
    "rollup_split",
    "savings",
    "summarize",
    "township_order",
    "travel",
    "turnaround",
    "unconfirmed_parts",
    "volume",
    "volume_consults",
    "wan",
    "within_limit",
    "workload",
]
