"""The dashboards print numbers one way, mark partial periods, name townships in the
page's language, and export times in local time (issue 20's page defects)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from billing import formatting
from billing.models import LedgerEntry
from billing.services import ensure_shaanxi_2021_schedule, record_saving
from consults.models import Consult
from facilities.models import ExamKind, Modality
from tests.test_dashboards import make_exam, page_tables, rows_by_label
from tests.test_exports import read_csv
from tests.test_i18n import switch_to_english

SAVINGS = reverse("billing:dashboards:savings")
TURNAROUND = reverse("billing:dashboards:turnaround")
VOLUME = reverse("billing:dashboards:volume")
EXAMS = reverse("billing:dashboards:exams")


def test_one_number_format_with_thousands_and_half_up() -> None:
    assert formatting.number(831454) == "831,454"
    assert formatting.yuan(Decimal("831454")) == "831,454.00"
    assert formatting.yuan(Decimal("-30")) == "-30.00"
    assert formatting.number(2.675, 2) == "2.68"  # its shortest form, rounded half up
    assert formatting.number(-0.001, 2) == "0.00"
    assert formatting.number(None) == "-"
    assert formatting.number(12345.675, 2) == "12,345.68"


def test_one_wan_rule_half_up_to_the_cent_of_a_wan() -> None:
    assert formatting.to_wan(Decimal("831454.00")) == Decimal("83.15")
    assert formatting.wan(Decimal("896872.00")) == "89.69"
    assert formatting.wan(Decimal("125")) == "0.01"  # 0.0125: half up, not half even
    assert formatting.wan(Decimal("12345678.90")) == "1,234.57"


@pytest.fixture
def ledger(township, other_township, ct_modality, dr_modality, radiologist):
    """Xuanwo: a CT of 40 parts (1,200 yuan) in 2024-03 and a DR in 2025-02; Pingliang
    (DR only): a DR in 2024-05."""
    ensure_shaanxi_2021_schedule()
    Modality.objects.create(facility=other_township, kind=ExamKind.DR, ae_title="PINGLIANG_DR")
    made = [
        make_exam(township, ExamKind.CT, date(2024, 3, 1), 30, radiologist, parts=40),
        make_exam(township, ExamKind.DR, date(2025, 2, 3), 20, radiologist),
        make_exam(other_township, ExamKind.DR, date(2024, 5, 6), 40, radiologist),
    ]
    return [record_saving(c) for c in made]


def test_the_savings_page_separates_thousands_and_dashes_a_kind_not_done(ledger, administrator_client) -> None:
    response = administrator_client.get(SAVINGS)
    page = response.content.decode()
    assert 'id="total-yuan" href="' in page
    tables = page_tables(response)
    by_township = rows_by_label(tables["by-township"])
    assert by_township["漩涡"] == ["1,200.00", "8.00", "2", "1,208.00", "0.12"]
    # Pingliang has no CT: "-", and no link to an empty exam list.
    assert by_township["平梁"][0] == "-"
    assert by_township["合计"] == ["1,200.00", "16.00", "3", "1,216.00", "0.12"]
    assert "1,216.00" in page and "1216.00" not in page


def test_the_overview_uses_the_same_format_and_speaks_to_administrators(ledger, administrator_client) -> None:
    page = administrator_client.get(reverse("billing:dashboard")).content.decode()
    assert "1,216.00" in page
    assert "论文" not in page and "表 1" not in page


def test_no_page_numbers_the_papers_tables_or_figures(ledger, administrator_client) -> None:
    for url in (SAVINGS, TURNAROUND, VOLUME):
        page = administrator_client.get(url).content.decode()
        for numbered in ("图1", "图2", "图3", "表1", "表2", "论文"):
            assert numbered not in page, (url, numbered)


def test_periods_the_data_covers_in_part_are_marked(ledger, administrator_client) -> None:
    # The exams run from 2024-03-01 to 2025-02-03: both years are partial.
    page = administrator_client.get(SAVINGS).content.decode()
    assert "2024 只含部分时段：2024-03-01 至 2024-12-31 的检查。" in page
    assert "2025 只含部分时段：2025-01-01 至 2025-02-03 的检查。" in page
    # A month inside the data is whole; the filter's cut makes one partial.
    page = administrator_client.get(SAVINGS, {"date_from": "2024-03-01", "date_to": "2024-05-15"}).content.decode()
    assert "2024-05 只含部分时段：2024-05-01 至 2024-05-15 的检查。" in page
    assert "2024-03 只含部分时段" not in page
    volume = administrator_client.get(VOLUME).content.decode()
    assert 'class="num partial" title="2025-01-01 – 2025-02-03">2025</th>' in volume
    turnaround = administrator_client.get(TURNAROUND).content.decode()
    assert "2025 只含部分时段：2025-01-01 至 2025-02-03 的检查。" in turnaround


def test_a_whole_year_of_data_is_not_marked(township, dr_modality, radiologist, administrator_client) -> None:
    ensure_shaanxi_2021_schedule()
    for day in (date(2023, 1, 1), date(2023, 12, 31)):
        record_saving(make_exam(township, ExamKind.DR, day, 20, radiologist))
    page = administrator_client.get(SAVINGS).content.decode()
    assert "只含部分时段" not in page


def test_turnaround_tables_lead_with_the_consult_time_and_keep_stages_for_details(ledger, administrator_client) -> None:
    response = administrator_client.get(TURNAROUND)
    tables = page_tables(response)
    assert tables["turnaround-township"][0] == [
        "按乡镇",
        "会诊数",
        "会诊时间 均值 ± 标准差（分钟）",
        "中位数（IQR）",
        "时限内比例",
    ]
    assert len(tables["turnaround-township-stages"][0]) == 5  # the label and four stages
    assert '<details class="stages">' in response.content.decode()


def test_the_charts_carry_their_axis_names(ledger, administrator_client) -> None:
    charts = administrator_client.get(TURNAROUND).context["charts"]
    assert charts["histogram"]["axis"] == "会诊时间（分钟）"
    assert charts["histogram"]["unit"] == "例"
    assert charts["figure2"]["unit"] == "分钟"


def test_in_english_townships_are_named_in_pinyin(ledger, administrator_client) -> None:
    switch_to_english(administrator_client)
    tables = page_tables(administrator_client.get(SAVINGS))
    assert {"Xuanwo", "Pingliang"} <= set(rows_by_label(tables["by-township"]))
    volume = page_tables(administrator_client.get(VOLUME))
    assert "Xuanwo" in rows_by_label(volume["volume-DR"])
    chart = administrator_client.get(TURNAROUND).context["charts"]["figure2"]
    assert set(chart["categories"]) == {"Xuanwo", "Pingliang"}


def test_date_filters_are_a_calendar_in_the_pages_language_not_the_browsers(ledger, administrator_client) -> None:
    page = administrator_client.get(SAVINGS, {"date_from": "2024-01-01"}).content.decode()
    assert 'type="date"' not in page
    assert 'name="date_from" value="2024-01-01"' in page
    assert "data-datepicker" in page
    assert "vendor/flatpickr/zh.js" in page


def test_the_entries_export_is_streamed_in_yuan_with_local_times(ledger, administrator_client) -> None:
    response = administrator_client.get(reverse("billing:dashboards:savings_export", args=["entries", "csv"]))
    assert response.streaming
    rows = read_csv(response)
    assert "节省（万元）" not in rows[0]
    at = rows[0].index("记账时间")
    entry = LedgerEntry.objects.get(pk=int(rows[1][0]))
    local = timezone.localtime(entry.recorded_at)
    assert rows[1][at] == local.strftime("%Y-%m-%d %H:%M:%S")
    assert "+00:00" not in rows[1][at]


def test_an_entry_recorded_just_after_midnight_shows_its_local_day(ledger, administrator_client) -> None:
    # 2021-12-31T17:19:50Z is 2022-01-01 01:19:50 in Hanyin.
    consult = make_exam(ledger[0].facility, ExamKind.DR, date(2022, 1, 1), 20)
    entry = record_saving(consult)
    # The ledger refuses updates; the time is set behind its back, as a past run left it.
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE billing_ledgerentry SET recorded_at = %s WHERE id = %s",
            [datetime(2021, 12, 31, 17, 19, 50, tzinfo=UTC), entry.pk],
        )
    rows = read_csv(administrator_client.get(reverse("billing:dashboards:savings_export", args=["entries", "csv"])))
    line = next(r for r in rows[1:] if r[0] == str(entry.pk))
    assert line[rows[0].index("记账时间")] == "2022-01-01 01:19:50"


def test_exam_rows_show_body_parts_and_link_to_their_consult(ledger, technologist_client) -> None:
    page = technologist_client.get(EXAMS).content.decode()
    consult = ledger[0].consult
    assert reverse("consults:detail", args=[consult.uuid]) in page
    assert "40 个部位" in page


def test_an_administrator_sees_the_exams_without_links_to_clinical_pages(ledger, administrator_client) -> None:
    page = administrator_client.get(EXAMS).content.decode()
    assert reverse("consults:detail", args=[ledger[0].consult.uuid]) not in page


def test_an_exam_with_no_body_parts_named_is_billed_as_unconfirmed(ledger, administrator_client) -> None:
    # The fixture's exams came without an order naming their parts.
    assert {e.parts_confirmed for e in ledger} == {False}
    consult = make_exam(ledger[0].facility, ExamKind.DR, date(2024, 6, 1), 20)
    Consult.objects.filter(pk=consult.pk).update(body_parts=2, body_part_names="胸部、腰椎")
    consult.refresh_from_db()
    assert record_saving(consult).parts_confirmed is True
    page = administrator_client.get(SAVINGS).content.decode()
    assert "3 例检查的部位数未经确认" in page


@pytest.mark.django_db
def test_the_township_list_is_the_html_django_renders_selected_or_not(township, other_township) -> None:
    from django import forms

    from billing.forms import FilterForm
    from facilities.models import Facility

    townships = Facility.objects.filter(kind=Facility.Kind.TOWNSHIP_CENTRE)
    for data in (None, {"township": str(other_township.uuid)}, {"township": "not-a-uuid"}):
        form = FilterForm(data, townships=townships)
        form.is_valid()
        quick = str(form["township"])
        form.fields["township"].widget = forms.Select(choices=form.fields["township"].widget.choices)
        # The same elements and attributes; Django's templates add whitespace between them.
        assert quick == re.sub(r">\s+<", "><", str(form["township"]).strip())
        assert "漩涡镇中心卫生院" in quick and "&lt;" not in quick
    assert f'value="{other_township.uuid}" selected' in str(
        FilterForm({"township": str(other_township.uuid)}, townships=townships)["township"]
    )


# The exam list's row as its template wrote it before the rows were built in the view
# (billing.views.exams.exam_row): the view's rows must stay this HTML.
EXAM_ROW_TEMPLATE = """{% load i18n figures %}{% for c in page %}
    <tr>
      <td>{% if links_consults %}<a href="{% url 'consults:detail' c.uuid %}">{{ c.exam_date|date:"Y-m-d" }}</a>{% else %}{{ c.exam_date|date:"Y-m-d" }}{% endif %}</td>
      <td>{{ c.facility|place }}</td><td>{{ c.kind }}</td>
      <td>{% if c.body_part_names %}{{ c.body_part_names }} {% endif %}<span class="muted">{% blocktranslate count n=c.body_parts %}{{ n }} 个部位{% plural %}{{ n }} 个部位{% endblocktranslate %}</span></td>
      <td><span class="priority priority-{{ c.priority }}">{{ c.get_priority_display }}</span></td>
      <td><span class="status status-{{ c.status }}">{{ c.get_status_display }}</span></td>
      <td>{{ c.radiologist|default:"" }}</td>
      <td>{{ c.arrived_at|date:"Y-m-d H:i:s" }}</td><td>{{ c.signed_at|date:"Y-m-d H:i:s" }}</td>
      <td class="num">{% if c.consult_time %}{% widthratio c.consult_time.total_seconds 60 1 %}{% endif %}</td>
      {% if shows_money %}<td class="num">{{ c.net_saving|yuan }}</td>{% endif %}
    </tr>{% endfor %}"""  # noqa: E501


@pytest.mark.parametrize("language", ["zh-hans", "en"])
def test_the_exam_lists_rows_are_the_html_its_template_gave(ledger, radiologist, language) -> None:
    from django.db.models import OuterRef, Subquery, Sum
    from django.template import Context, Template
    from django.utils import translation

    from billing.views.exams import ExamLabels, exam_row

    unsigned = make_exam(ledger[0].facility, ExamKind.CT, date(2024, 3, 2), 0, None, signed=False)
    Consult.objects.filter(pk=unsigned.pk).update(body_part_names="头颅 <平扫>", priority="emergency")
    net = LedgerEntry.objects.filter(consult=OuterRef("pk")).values("consult").annotate(s=Sum("saving")).values("s")
    consults = list(
        Consult.objects.select_related("facility", "radiologist").annotate(net_saving=Subquery(net)).order_by("pk")
    )
    assert len(consults) == 4
    with translation.override(language):
        labels = ExamLabels.now()
        for links in (True, False):
            for money in (True, False):
                context = Context({"page": consults, "links_consults": links, "shows_money": money})
                expected = re.sub(r">\s+<", "><", Template(EXAM_ROW_TEMPLATE).render(context).strip())
                built = "".join(exam_row(c, labels, links=links, money=money) for c in consults)
                assert built == expected


def test_counts_on_the_consults_and_audit_pages_separate_thousands(administrator_client, township) -> None:
    """The open consults' and the audit trail's counts read 1234 where the dashboards read
    1,234: one number format on every page (cloudpacs.numbers), in either language."""
    from facilities.models import AuditEvent

    arrived = timezone.now()
    Consult.objects.bulk_create(
        Consult(facility=township, kind=ExamKind.DR, exam_date=date(2025, 9, 1), arrived_at=arrived)
        for _n in range(1234)
    )
    AuditEvent.objects.bulk_create(
        AuditEvent(action="facilities.login.succeeded", actor_name="x") for _n in range(1234)
    )
    for language in ("zh-hans", "en"):
        administrator_client.post(reverse("set_language"), {"language": language, "next": "/"})
        page = administrator_client.get(reverse("consults:open_consults")).content.decode()
        assert re.search(r'id="open-total">1,234<', page)
        assert ("共 1,234 例" if language == "zh-hans" else "1,234 consults") in page
        page = administrator_client.get(reverse("audit")).content.decode()
        events = f"{AuditEvent.objects.count():,}"  # 1,234 and the page's own sign-ins
        assert (f"共 {events} 条记录" if language == "zh-hans" else f"{events} records") in page
