"""What both turnaround engines share: the stages, a group's Summary, group codes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from django.utils.translation import gettext_lazy as _

from billing import histogram

# "Within the time limit" is the consult's own: signed by its stored due_at, which the
# reading workflow set from CONSULT_TIME_LIMITS when it arrived (consults.rules). A consult
# with no due_at, or not signed, is not within.
WITHIN_SQL = "(c.signed_at IS NOT NULL AND c.due_at IS NOT NULL AND c.signed_at <= c.due_at)"

# The stages of a consult: (key, label, start column, end column).
STAGES: tuple[tuple[str, Any, str, str], ...] = (
    ("assign", _("到达→分配"), "arrived_at", "assigned_at"),
    ("open", _("分配→打开"), "assigned_at", "opened_at"),
    ("sign", _("打开→签发"), "opened_at", "signed_at"),
    ("deliver", _("签发→送达"), "signed_at", "delivered_at"),
)

PERIODS = ("year", "quarter", "month")

# The histogram of consult minutes: 10-minute bins, the last one open-ended.
HISTOGRAM_BIN_MINUTES = histogram.PLOT_BIN_MINUTES
HISTOGRAM_BINS = histogram.PLOT_BINS


# The ends of each measure: the consult, then each stage.
MEASURE_ENDS = (("arrived_at", "signed_at"), *((a, b) for _k, _l, a, b in STAGES))


@dataclass
class Summary:
    """Minutes of one measure over a group: n, mean ± SD, median (IQR)."""

    n: int = 0
    mean: float | None = None
    sd: float | None = None
    q1: float | None = None
    median: float | None = None
    q3: float | None = None


@dataclass
class Group:
    consult: Summary
    stages: dict[str, Summary]
    within_limit: int


def group_codes(column: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of an integer column, ascending, and each row's index into them,
    as small integers: numpy's stable sort of int16 is a radix sort."""
    low = int(column.min())
    if int(column.max()) - low < 1_000_000:
        # Ids and periods span a small range: count them instead of sorting 62 thousand rows.
        present = np.bincount(column - low) > 0
        values = np.flatnonzero(present) + low
        index = np.cumsum(present) - 1
        codes = index[column - low]
    else:
        values, codes = np.unique(column, return_inverse=True)
    return values, codes.astype(np.int16 if values.size <= np.iinfo(np.int16).max else np.int64)


def period_keys(day: np.ndarray, period: str) -> tuple[np.ndarray, Any]:
    days = day.astype("datetime64[D]")
    year = days.astype("datetime64[Y]").astype(np.int64) + 1970
    month = days.astype("datetime64[M]").astype(np.int64) % 12 + 1
    return {
        "year": (year, str),
        "quarter": (year * 10 + (month - 1) // 3 + 1, lambda k: f"{k // 10}-Q{k % 10}"),
        "month": (year * 100 + month, lambda k: f"{k // 100}-{k % 100:02d}"),
    }[period]
