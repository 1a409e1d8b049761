"""A province's day of township imaging, from the Hanyin County demo's arrival model.

Each township of the province is one of Hanyin's eleven, in turn (township i is Hanyin's
i mod 11), with that township's exams of the last whole year of the paper (2024, Tables 1
and 2): two in eleven have a CT, every one a DR. A day's exams are drawn (Poisson) from
the yearly counts, spread over the year's days by billing.hanyin.day_weight (weekends,
holidays), and over the day's hours by HALF_HOUR_WEIGHTS (routine and urgent exams, 08:00
to 17:30) and EMERGENCY_HOUR_WEIGHTS (emergencies, at any hour). Body parts follow
BODY_PART_MIX.

What the paper does not give, and this module chooses (bench/scale/run.py prints it):
- Images per CT exam, by body part (CT_SERIES): a scout, the thick axial series (5 mm, or
  2-3 mm for spine and sinus) and one thin reconstruction (0.625-1.25 mm), as a 40-row
  scanner such as the uCT 528 exports by default: about 300 images an exam on the mix.
- Images per DR exam, by body part (DR_VIEWS): one view for a chest (a lateral in a
  quarter of them), two for spine and limbs.
- Sizes: a CT image 512 x 512 x 16 bit (0.5 MB), a DR image 3000 x 2500 x 16 bit (15 MB),
  uncompressed as township consoles send them.

Pure functions over the standard library and billing.hanyin (no Django), so that tests and
the sizing in docs/operations.md use the same numbers as the replay."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import date, timedelta

from billing.hanyin import (
    BODY_PART_MIX,
    EMERGENCY_HOUR_WEIGHTS,
    FIRST_HALF_HOUR,
    HALF_HOUR_WEIGHTS,
    PRIORITY_SHARES,
    TOWNSHIPS,
    day_weight,
)

MODEL_YEAR = 2024
YEAR_INDEX = 2  # of billing.hanyin.YEARS
CT_IMAGE_BYTES = 512 * 512 * 2
DR_IMAGE_BYTES = 3000 * 2500 * 2

# Images of one CT exam by body part: (scout, thick axial, thin reconstruction).
CT_SERIES: dict[str, tuple[int, int, int]] = {
    "HEAD": (1, 32, 160),
    "CHEST": (1, 70, 280),
    "ABDOMEN": (1, 80, 320),
    "LSPINE": (1, 40, 200),
    "CSPINE": (1, 30, 150),
    "PELVIS": (1, 50, 200),
    "SINUS": (1, 40, 100),
    "KNEE": (1, 40, 150),
    "RIB": (1, 70, 280),
}
# Views of one DR exam by body part (a chest gets a lateral in LATERAL_CHEST_SHARE of exams).
DR_VIEWS: dict[str, int] = {"CHEST": 1}
DR_DEFAULT_VIEWS = 2
LATERAL_CHEST_SHARE = 0.25
# Series lengths vary with the patient's size and the range scanned.
SERIES_SPREAD = 0.15


@dataclass(frozen=True)
class Exam:
    at: float  # seconds after midnight
    township: int  # 0 .. townships - 1
    kind: str  # "CT" or "DR"
    part: str
    priority: str
    series: tuple[int, ...]  # images per series

    @property
    def instances(self) -> int:
        return sum(self.series)

    @property
    def real_bytes(self) -> int:
        return self.instances * (CT_IMAGE_BYTES if self.kind == "CT" else DR_IMAGE_BYTES)


def effective_days(year: int = MODEL_YEAR) -> float:
    """The year's days weighted as ordinary weekdays (a Saturday counts 0.6, a holiday 0.3)."""
    first = date(year, 1, 1)
    days = (date(year + 1, 1, 1) - first).days
    return sum(day_weight(first + timedelta(days=i)) for i in range(days))


def expected_per_weekday(townships: int) -> dict[str, float]:
    """Exams of an ordinary weekday in a province of `townships` townships, by kind."""
    days = effective_days()
    totals = {"CT": 0.0, "DR": 0.0}
    for index in range(townships):
        model = TOWNSHIPS[index % len(TOWNSHIPS)]
        totals["CT"] += model.ct[YEAR_INDEX] / days
        totals["DR"] += model.dr[YEAR_INDEX] / days
    return totals


def expected_per_year(townships: int) -> dict[str, float]:
    """Exams a year in a province of `townships` townships, by kind (the model year's)."""
    totals = {"CT": 0.0, "DR": 0.0}
    for index in range(townships):
        model = TOWNSHIPS[index % len(TOWNSHIPS)]
        totals["CT"] += model.ct[YEAR_INDEX]
        totals["DR"] += model.dr[YEAR_INDEX]
    return totals


def mean_images(kind: str) -> float:
    """Images per exam of `kind` on the body-part mix (the mean of what series() draws)."""
    mix = BODY_PART_MIX[kind]
    total = sum(share for _, share in mix)
    if kind == "CT":
        return sum(share * sum(CT_SERIES.get(part, CT_SERIES["CHEST"])) for part, share in mix) / total
    return (
        sum(
            share * (DR_VIEWS.get(part, DR_DEFAULT_VIEWS) + (LATERAL_CHEST_SHARE if part == "CHEST" else 0.0))
            for part, share in mix
        )
        / total
    )


def series(kind: str, part: str, rng: random.Random) -> tuple[int, ...]:
    if kind == "CT":
        scout, thick, thin = CT_SERIES.get(part, CT_SERIES["CHEST"])
        scale = max(0.5, rng.gauss(1.0, SERIES_SPREAD))
        return (scout, max(1, round(thick * scale)), max(1, round(thin * scale)))
    views = DR_VIEWS.get(part, DR_DEFAULT_VIEWS)
    if part == "CHEST" and rng.random() < LATERAL_CHEST_SHARE:
        views += 1
    return tuple(1 for _ in range(views))


def _poisson(rng: random.Random, mean: float) -> int:
    # Knuth's method in pieces: the means here are a few exams a day.
    count, left = 0, mean
    while left > 0:
        step = min(left, 30.0)
        left -= step
        limit, product = math.exp(-step), rng.random()
        while product > limit:
            count += 1
            product *= rng.random()
    return count


def _time_of_day(rng: random.Random, priority: str) -> float:
    if priority == "emergency":
        hour = rng.choices(range(24), weights=EMERGENCY_HOUR_WEIGHTS)[0]
        return hour * 3600 + rng.random() * 3600
    slot = rng.choices(range(len(HALF_HOUR_WEIGHTS)), weights=HALF_HOUR_WEIGHTS)[0]
    return (FIRST_HALF_HOUR + slot) * 1800 + rng.random() * 1800


def province_day(townships: int, day: date, seed: int = 1) -> list[Exam]:
    """Every exam of `day` in a province of `townships` townships, in order of time."""
    if townships < 1:
        raise ValueError("a province needs at least one township")
    rng = random.Random(seed)
    days = effective_days()
    weight = day_weight(day)
    priorities = ("routine", "urgent", "emergency")
    exams: list[Exam] = []
    for index in range(townships):
        model = TOWNSHIPS[index % len(TOWNSHIPS)]
        for kind, yearly in (("CT", model.ct[YEAR_INDEX]), ("DR", model.dr[YEAR_INDEX])):
            parts, shares = zip(*BODY_PART_MIX[kind], strict=True)
            for _ in range(_poisson(rng, yearly / days * weight)):
                priority = rng.choices(priorities, weights=PRIORITY_SHARES)[0]
                part = rng.choices(parts, weights=shares)[0]
                exams.append(Exam(_time_of_day(rng, priority), index, kind, part, priority, series(kind, part, rng)))
    exams.sort(key=lambda exam: exam.at)
    return exams


def busiest_rate(exams: list[Exam], window: float = 1800.0) -> float:
    """Images a second in the day's busiest `window` (counted where each exam starts)."""
    if not exams:
        return 0.0
    starts = [exam.at for exam in exams]
    counts = [exam.instances for exam in exams]
    best = running = 0
    first = 0
    for last, at in enumerate(starts):
        running += counts[last]
        while starts[first] < at - window:
            running -= counts[first]
            first += 1
        best = max(best, running)
    return best / window
