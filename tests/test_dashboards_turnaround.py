"""Turnaround's figures computed in Python for every grouping at once, from the raw rows:
the same numbers as one group at a time, as the statistics module and as PostgreSQL's
percentile_cont. The rollup the pages read is held to these (tests/test_dashboards_rollup.py)."""

from __future__ import annotations

import math
import random
import re
import statistics
from datetime import date, timedelta

import numpy as np
import pytest
from django.db import connection

from billing import dashboards, rollup
from billing.dashboards import Filters, Summary
from billing.reports.measures import group_codes
from consults.models import Consult
from facilities.models import ExamKind
from tests.test_dashboards import make_exam


def assert_same(a: Summary, b: Summary) -> None:
    assert a.n == b.n
    for name in ("mean", "sd", "q1", "median", "q3"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None and y is None) or math.isclose(x, y, rel_tol=1e-12, abs_tol=1e-9), (name, x, y)


def test_grouped_summaries_equal_summarizing_each_group_alone() -> None:
    rng = np.random.default_rng(6)
    values = rng.gamma(2.0, 20.0, size=5000)
    values[rng.random(5000) < 0.1] = np.nan
    codes = rng.integers(0, 7, size=5000)
    codes[:3] = 7  # a group of three values
    codes[3] = 8  # a group of one
    values[3] = 12.5
    codes[4:6] = 9  # a group with nothing but missing values
    values[4:6] = np.nan
    order = np.argsort(values, kind="stable")
    summaries = dashboards.grouped_summaries(values, order, codes.astype(np.int16), 10)
    for group in range(10):
        assert_same(summaries[group], dashboards.summarize(values[codes == group]))
    assert summaries[8] == Summary(1, 12.5, None, 12.5, 12.5, 12.5)
    assert summaries[9] == Summary()
    nothing = np.full(4, np.nan)
    assert dashboards.grouped_summaries(nothing, np.argsort(nothing), np.zeros(4, np.int16), 2) == [Summary()] * 2


@pytest.fixture
def many_exams(township, other_township, ct_modality, dr_modality, radiologist) -> list[Consult]:
    """Forty signed exams of uneven lengths, some never delivered."""
    rng = random.Random(62305)
    consults = []
    for i in range(40):
        facility = township if i % 3 else other_township
        kind = ExamKind.CT if i % 2 else ExamKind.DR
        day = date(2024, 1, 1) + timedelta(days=rng.randrange(700))
        minutes = round(rng.uniform(5, 300), 2)  # stages to the millisecond, as SQLite keeps them
        consult = make_exam(facility, kind, day, minutes, radiologist, hour=rng.randrange(24))
        if i % 7 == 0:
            consult.delivered_at = None
            consult.status = Consult.Status.SIGNED
            consult.save()
        consults.append(consult)
    rollup.rebuild()
    return consults


def minutes_of(consults: list[Consult], start: str, end: str) -> list[float]:
    return [
        (getattr(c, end) - getattr(c, start)).total_seconds() / 60
        for c in consults
        if getattr(c, start) and getattr(c, end)
    ]


def reference(values: list[float]) -> Summary:
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return Summary(len(values), statistics.mean(values), statistics.stdev(values), q1, median, q3)


def test_every_township_and_stage_matches_the_statistics_module(many_exams, township) -> None:
    data = dashboards.turnaround(Filters(), source="raw")
    for row in data.by_township:
        consults = [c for c in many_exams if str(c.facility_id) == row.key]
        assert_same(row.consult, reference(minutes_of(consults, "arrived_at", "signed_at")))
        for key, _label, start, end in dashboards.STAGES:
            assert_same(row.stages[key], reference(minutes_of(consults, start, end)))
    # Never delivered: left out of the last stage, not counted as zero.
    assert data.total.stages["deliver"].n == 40 - 6
    assert data.total.n == 40


def test_the_periods_split_the_exams_by_exam_date(many_exams) -> None:
    for period in dashboards.PERIODS:
        data = dashboards.turnaround(Filters(), period, source="raw")
        expected: dict[str, int] = {}
        for c in many_exams:
            label = {
                "year": f"{c.exam_date.year}",
                "quarter": f"{c.exam_date.year}-Q{(c.exam_date.month - 1) // 3 + 1}",
                "month": f"{c.exam_date:%Y-%m}",
            }[period]
            expected[label] = expected.get(label, 0) + 1
        assert {r.key: r.n for r in data.by_period} == expected
        assert all(r.drill == dashboards.period_drill(r.key, period) for r in data.by_period)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="percentile_cont is PostgreSQL's")
def test_the_figures_equal_percentile_cont_on_postgresql(many_exams) -> None:
    data = dashboards.turnaround(Filters(), source="raw")
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT facility_id, count(*), avg(m), stddev_samp(m),
                   percentile_cont(ARRAY[0.25, 0.5, 0.75]) WITHIN GROUP (ORDER BY m)
            FROM (SELECT facility_id, date_part('epoch', signed_at - arrived_at) / 60.0 AS m
                  FROM consults_consult WHERE signed_at IS NOT NULL) s
            GROUP BY facility_id
            """
        )
        expected = {str(f): Summary(n, mean, sd, *quartiles) for f, n, mean, sd, quartiles in cursor.fetchall()}
    assert {r.key for r in data.by_township} == set(expected)
    for row in data.by_township:
        assert_same(row.consult, expected[row.key])


@pytest.mark.parametrize("spread", [1, 10_000_000], ids=["ids-close-together", "ids-far-apart"])
def test_group_codes_number_the_distinct_values_in_order(spread) -> None:
    column = np.array([5, 3, 5, 9, 3]) * spread
    values, codes = group_codes(column)
    assert values.tolist() == [3 * spread, 5 * spread, 9 * spread]
    assert codes.tolist() == [1, 0, 1, 2, 0]


# ---------------------------------------------------------------------------- the table's cells, formatted once


def grouped(text: str) -> str:
    """floatformat's text with its thousands separated by commas."""
    sign, digits = ("-", text[1:]) if text.startswith("-") else ("", text)
    whole, _dot, fraction = digits.partition(".")
    return sign + f"{int(whole):,}" + (f".{fraction}" if fraction else "")


def test_fixed_prints_numbers_as_floatformat_does_with_thousands_separated() -> None:
    from django.template.defaultfilters import floatformat

    rng = random.Random(6)
    values = [0.125, 2.675, -0.001, -0.005, 0.0, 1e-9, 12345.675, 40.0, 3.14159, None]
    values += [rng.uniform(-50, 5000) for _i in range(500)] + [round(rng.uniform(0, 300), 3) for _i in range(500)]
    for value in values:
        for places in (1, 2):
            expected = "" if value is None else grouped(floatformat(value, places))
            assert dashboards.fixed(value, places) == expected, (value, places)


# The row as the template would print it with the pages' number filters (billing.templatetags
# .figures), before the cells were formatted in the view and the rows built there
# (billing.views.turnaround.row_html, stages_html): the lead row, then the stages.
FILTERED_ROW = "\n".join(
    [
        "{% load figures %}",
        '<tr><th scope="row"><a href="{{ r.href }}">{{ r.label }}</a></th>',
        '<td class="num"><a href="{{ r.href }}">{{ r.n|num }}</a></td>',
        '<td class="num mean"><a href="{{ r.href }}">{% if r.n %}{{ r.consult.mean|num:2 }}{% endif %}</a>',
        "± {% if r.consult.sd is None %}–{% else %}{{ r.consult.sd|num:2 }}{% endif %}</td>",
        '<td class="num">{% if r.n %}{{ r.consult.median|num:2 }}',
        "({{ r.consult.q1|num:2 }}–{{ r.consult.q3|num:2 }}){% else %} (–){% endif %}</td>",
        '<td class="num share">{% if r.n %}{{ r.share_percent|num:1 }} %{% endif %}</td>',
        "</tr>",
    ]
)
FILTERED_STAGES = "\n".join(
    [
        "{% load figures %}",
        '<tr><th scope="row">{{ r.label }}</th>',
        "{% for label, s in r.stage_list %}",
        '<td class="num">{% if s.n %}{{ s.mean|num:2 }}',
        "± {% if s.sd is None %}–{% else %}{{ s.sd|num:2 }}{% endif %}{% else %}–{% endif %}</td>",
        '<td class="num">{% if s.n %}{{ s.median|num:2 }}',
        "({{ s.q1|num:2 }}–{{ s.q3|num:2 }}){% else %}–{% endif %}</td>",
        "{% endfor %}</tr>",
    ]
)


def squeezed(html: str) -> str:
    return re.sub(r">\s+<", "><", " ".join(html.split()))


def test_the_rows_cells_read_as_the_template_filters_printed_them(many_exams) -> None:
    from django.template import Context, Template

    from billing.views.turnaround import row_html, stages_html

    data = dashboards.turnaround(Filters())
    empty = dashboards.TurnaroundRow("x", "none", Summary(), {k: Summary() for k, *_r in dashboards.STAGES}, 0)
    days = [c.exam_date for c in many_exams]
    day = next(d for d in days if days.count(d) == 1)
    one = dashboards.turnaround(Filters(date_from=day, date_to=day)).total
    rows = [data.total, *data.by_township, *data.by_radiologist, *data.by_period, empty, one]
    assert one.n == 1 and one.consult.sd is None
    for row in rows:
        row.href = "/exams/?x=1"
        row.text = row.cells()
        filtered = Template(FILTERED_ROW).render(Context({"r": row}))
        formatted = row_html(row)
        assert squeezed(formatted) == squeezed(filtered)
        filtered = Template(FILTERED_STAGES).render(Context({"r": row}))
        formatted = stages_html(row)
        assert squeezed(formatted) == squeezed(filtered)
