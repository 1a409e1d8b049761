"""The printed monthly report: each figure in the PDF (read back with pypdf) equals the one
computed here from the raw rows (consults and ledger entries); one page; made on demand from
its page (administrators only, audited) and by the periodic task on the 1st, once."""

from __future__ import annotations

import io
import re
import statistics
from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db.models import Sum
from django.urls import reverse
from django.utils import timezone
from pypdf import PdfReader

from billing import formatting, monthly, rollup, tasks
from billing.models import LedgerEntry, MonthlyReport
from billing.reports.monthly import TOWNSHIP_ROWS, month_figures
from billing.services import ensure_shaanxi_2021_schedule, record_saving
from consults.models import Consult, Priority
from facilities.models import AuditEvent, ExamKind, Facility, Modality, User
from tests.conftest import login
from tests.factories import make_user
from tests.test_dashboards import make_exam

pytestmark = pytest.mark.django_db

TZ = ZoneInfo("Asia/Shanghai")
SEPTEMBER = date(2025, 9, 1)


@pytest.fixture
def month_of_exams(county, township, other_township, ct_modality, dr_modality, radiologist) -> list[Consult]:
    """September 2025 at Xuanwo (CT and DR) and Pingliang (DR), some signed past their
    limit, one not signed; August 2025 and September 2024 for the comparisons."""
    ensure_shaanxi_2021_schedule()
    Modality.objects.create(facility=other_township, kind=ExamKind.DR, ae_title="PINGLIANG_DR")
    second = make_user(User.Role.RADIOLOGIST, None, username="dr_wang", display_name="王医生")
    exams = [
        make_exam(township, ExamKind.CT, date(2025, 9, 1), 30, radiologist, parts=2),
        make_exam(township, ExamKind.CT, date(2025, 9, 9), 50, radiologist, priority=Priority.EMERGENCY),
        make_exam(township, ExamKind.CT, date(2025, 9, 30), 300, second),  # past 240 minutes
        make_exam(township, ExamKind.DR, date(2025, 9, 2), 20, second),
        make_exam(township, ExamKind.DR, date(2025, 9, 3), 130, radiologist),  # past 120 minutes
        make_exam(other_township, ExamKind.DR, date(2025, 9, 15), 41.5, second),
        make_exam(township, ExamKind.CT, date(2025, 8, 20), 60, radiologist),
        make_exam(other_township, ExamKind.DR, date(2024, 9, 5), 30, second),
        make_exam(other_township, ExamKind.DR, date(2024, 9, 6), 30, second),
        make_exam(township, ExamKind.DR, date(2025, 10, 1), 30, second),  # the month after
    ]
    for consult in exams:
        record_saving(consult)
    exams.append(make_exam(township, ExamKind.CT, date(2025, 9, 20), 0, None, signed=False))
    rollup.follow_consult_changes()
    return exams


def pdf_text(pdf: bytes) -> tuple[str, int]:
    reader = PdfReader(io.BytesIO(pdf))
    return "\n".join(page.extract_text() for page in reader.pages), len(reader.pages)


def squeeze(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def raw(first: date, last: date, facility: Facility | None = None) -> dict:
    """The month's figures from the raw rows, by the rules the dashboards state."""
    consults = Consult.objects.filter(exam_date__gte=first, exam_date__lte=last).exclude(
        status=Consult.Status.CANCELLED
    )
    entries = LedgerEntry.objects.filter(exam_date__gte=first, exam_date__lte=last)
    if facility is not None:
        consults, entries = consults.filter(facility=facility), entries.filter(facility=facility)
    signed = [c for c in consults if c.signed_at is not None]
    minutes = [(c.signed_at - c.arrived_at).total_seconds() / 60 for c in signed]
    within = [c for c in signed if c.due_at is not None and c.signed_at <= c.due_at]
    return {
        "CT": consults.filter(kind=ExamKind.CT).count(),
        "DR": consults.filter(kind=ExamKind.DR).count(),
        "exams": consults.count(),
        "saving": entries.aggregate(s=Sum("saving"))["s"] or Decimal("0.00"),
        "entries": entries.count(),
        "signed": len(signed),
        "mean": statistics.fmean(minutes) if minutes else None,
        "within": len(within),
        "share": len(within) / len(signed) if signed else None,
    }


def minutes(value: float | None) -> str:
    return "-" if value is None else formatting.number(value, 1)


def cell(n: int) -> str:
    """A table's count as the pages print it: "-" for nothing counted."""
    return formatting.number(n) if n else "-"


def test_each_figure_in_the_pdf_equals_the_raw_rows(month_of_exams, township, other_township):
    report = monthly.make_report(SEPTEMBER)
    text, pages = pdf_text(bytes(report.pdf))
    flat = squeeze(text)
    assert pages == 1
    assert "汉阴县人民医院远程影像会诊月报" in flat
    assert "2025 年 9 月（2025-09-01 至 2025-09-30，按检查日期）" in flat

    month = raw(date(2025, 9, 1), date(2025, 9, 30))
    assert (month["CT"], month["DR"], month["exams"], month["signed"], month["within"]) == (4, 3, 7, 6, 4)
    # The headline boxes.
    assert f"检查量（人次） {month['exams']} CT {month['CT']} · DR {month['DR']}" in flat
    assert f"为群众节省（元） {formatting.yuan(month['saving'])} {formatting.wan(month['saving'])} 万元" in flat
    assert f"已计费 {month['entries']} 人次" in flat
    assert f"平均会诊时间（分钟） {minutes(month['mean'])}" in flat
    assert f"已签发 {month['signed']} 例" in flat
    assert f"时限内完成率 {formatting.percent(month['share'])}" in flat
    assert f"{month['within']} / {month['signed']} 例在时限内签发" in flat

    # Beside the month before and the same month a year earlier.
    august, last_year = raw(date(2025, 8, 1), date(2025, 8, 31)), raw(date(2024, 9, 1), date(2024, 9, 30))
    assert (august["exams"], last_year["exams"]) == (1, 2)
    assert f"上月 2025 年 8 月：检查 1 人次，节省 {formatting.yuan(august['saving'])} 元" in flat
    assert f"上年同月 2024 年 9 月：检查 2 人次，节省 {formatting.yuan(last_year['saving'])} 元" in flat
    exams_mom = formatting.percent((month["exams"] - august["exams"]) / august["exams"])
    exams_yoy = formatting.percent((month["exams"] - last_year["exams"]) / last_year["exams"])
    assert f"环比 +{exams_mom} · 同比 +{exams_yoy}" in flat

    # The townships' table, each row and the total.
    for facility in (township, other_township):
        t = raw(date(2025, 9, 1), date(2025, 9, 30), facility)
        row = (
            f"{facility.short_name} {cell(t['CT'])} {cell(t['DR'])} {cell(t['exams'])} {formatting.yuan(t['saving'])} "
            f"{cell(t['signed'])} {minutes(t['mean'])} {formatting.percent(t['share'])}"
        )
        assert row in flat, row
    total = (
        f"合计 {month['CT']} {month['DR']} {month['exams']} {formatting.yuan(month['saving'])} "
        f"{month['signed']} {minutes(month['mean'])} {formatting.percent(month['share'])}"
    )
    assert total in flat, total
    # Signed within the limit by priority (h23a's within_limit), and the saving per exam.
    emergency = [c for c in Consult.objects.filter(exam_date__month=9, exam_date__year=2025, priority="emergency")]
    assert len(emergency) == 1 and emergency[0].signed_at <= emergency[0].due_at
    assert "时限内完成率（按优先级与检查类型） 优先级 CT DR 合计 急诊 100.0 % - 100.0 %" in flat
    per_exam = (month["saving"] / month["entries"]).quantize(Decimal("0.01"))
    assert f"每人次节省 {formatting.yuan(per_exam)} 元" in flat
    # What the list of reports shows, kept with it.
    assert report.figures["exams"] == month["exams"]
    assert Decimal(report.figures["saving"]) == month["saving"]


def test_a_month_without_exams_prints_dashes_not_errors(month_of_exams):
    text, pages = pdf_text(bytes(monthly.make_report(date(2025, 6, 1)).pdf))
    flat = squeeze(text)
    assert pages == 1
    assert "检查量（人次） 0" in flat and "时限内完成率 -" in flat


def test_the_pdf_prints_no_figure_as_the_pages_do(month_of_exams, administrator_client):
    """The PDF printed 0 (and "—") where the pages print "-": Pingliang has no CT, and the
    savings page's table shows "-" in its CT column; the PDF's townships' table did "0"."""
    flat = squeeze(pdf_text(bytes(monthly.make_report(SEPTEMBER).pdf))[0])
    pingliang = raw(SEPTEMBER, date(2025, 9, 30), Facility.objects.get(code="PINGLIANG"))
    assert (pingliang["CT"], pingliang["DR"]) == (0, 1)
    assert f"平梁 - 1 1 {formatting.yuan(pingliang['saving'])} 1 " in flat
    page = administrator_client.get(
        reverse("billing:dashboards:savings"), {"date_from": "2025-09-01", "date_to": "2025-09-30"}
    ).content.decode()
    assert re.search(r"平梁</a></th><td class=\"num\">-</td>", page)
    assert "—" not in flat


def test_an_english_pdf_names_the_county_and_townships_in_english(month_of_exams):
    from billing.monthly_pdf import render_monthly_pdf

    figures = month_figures(SEPTEMBER)
    pdf = render_monthly_pdf(figures, made_at=timezone.now(), made_by=None, language="en")
    flat = squeeze(pdf_text(pdf)[0])
    assert "Hanyin County People's Hospital: remote imaging consults, monthly report" in flat
    assert "Xuanwo" in flat and "Pingliang" in flat
    assert "漩涡" not in flat and "汉阴" not in flat


def test_a_province_fits_on_one_page_with_the_rest_added_up(month_of_exams, ct_modality):
    for i in range(30):
        facility = Facility.objects.create(
            code=f"T{i:03d}", name=f"第{i}乡镇卫生院", short_name=f"乡{i}", pinyin=f"T{i}", kind="township", level=1
        )
        Modality.objects.create(facility=facility, kind=ExamKind.DR, ae_title=f"T{i:03d}_DR")
        record_saving(make_exam(facility, ExamKind.DR, date(2025, 9, 10), 30 + i, None))
    rollup.follow_consult_changes()
    figures = month_figures(SEPTEMBER)
    assert len(figures.townships) == TOWNSHIP_ROWS
    other = figures.townships[-1]
    assert other.facility is None
    assert sum(t.total for t in figures.townships) == figures.total_exams
    text, pages = pdf_text(bytes(monthly.make_report(SEPTEMBER).pdf))
    assert pages == 1
    assert f"其余 {other.label} 个乡镇" in squeeze(text)


def test_a_month_not_over_is_refused():
    with pytest.raises(monthly.MonthNotOver):
        monthly.make_report(date.today().replace(day=1) + timedelta(days=40))


# ---------------------------------------------------------------------------- the periodic task


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=TZ)


def test_on_the_first_the_task_makes_the_month_befores_report_once(month_of_exams):
    assert monthly.make_due_report(at(2025, 10, 1, 1, 30)) is None  # before 02:00: not yet
    report = monthly.make_due_report(at(2025, 10, 1, 2, 15))
    assert report is not None
    assert (report.month, report.trigger, report.made_by) == (SEPTEMBER, MonthlyReport.Trigger.SCHEDULE, None)
    assert monthly.make_due_report(at(2025, 10, 1, 2, 30)) is None
    assert monthly.make_due_report(at(2025, 10, 17, 9, 0)) is None
    assert MonthlyReport.objects.filter(month=SEPTEMBER).count() == 1
    event = AuditEvent.objects.get(action="billing.monthly_report.generated")
    assert event.actor is None and event.detail == {"month": "2025-09", "trigger": "schedule"}


def test_a_platform_down_on_the_first_makes_it_at_its_next_run(month_of_exams):
    report = monthly.make_due_report(at(2025, 10, 3, 8, 0))
    assert report is not None and report.month == SEPTEMBER


def test_nothing_is_made_before_the_first_exam_recorded(month_of_exams):
    assert monthly.make_due_report(at(2024, 8, 1, 3, 0)) is None
    assert not MonthlyReport.objects.exists()


def test_the_task_is_on_beats_schedule():
    entries = {spec["task"] for spec in settings.CELERY_BEAT_SCHEDULE.values()}
    assert "billing.tasks.make_monthly_report" in entries
    # No exam recorded yet: nothing due, and the run says so.
    assert tasks.make_monthly_report.delay().get() == ""


@pytest.mark.django_db(transaction=True)  # the ticker closes stale connections, as a process should
def test_without_a_broker_the_ticker_makes_it(month_of_exams):
    due = monthly.due_month(timezone.now())
    call_command("ticker", "--once")
    made = list(MonthlyReport.objects.values_list("month", "trigger"))
    assert made == ([(due, MonthlyReport.Trigger.SCHEDULE)] if due is not None else [])


# ---------------------------------------------------------------------------- the page


def test_an_administrator_makes_one_from_the_page_and_downloads_it(month_of_exams, administrator):
    client = login(administrator)
    page = client.get(reverse("billing:dashboards:monthly"))
    assert page.status_code == 200
    response = client.post(reverse("billing:dashboards:monthly"), {"month": "2025-09"}, follow=True)
    assert "已生成 2025-09 的月报。" in response.content.decode()
    report = MonthlyReport.objects.get()
    assert (report.trigger, report.made_by) == (MonthlyReport.Trigger.DEMAND, administrator)
    assert 'data-month="2025-09"' in response.content.decode()

    download = client.get(reverse("billing:dashboards:monthly_pdf", args=[report.uuid]))
    assert download["Content-Type"] == "application/pdf"
    assert 'filename="yunying-monthly-2025-09.pdf"' in download["Content-Disposition"]
    assert download.content == bytes(report.pdf)
    text, _pages = pdf_text(download.content)
    assert "生成：王管理员" in squeeze(text)
    actions = sorted(AuditEvent.objects.filter(object_id=str(report.uuid)).values_list("action", "actor"))
    assert actions == [
        ("billing.monthly_report.downloaded", administrator.pk),
        ("billing.monthly_report.generated", administrator.pk),
    ]


def test_the_monthly_page_links_every_report_as_the_others_do(administrator_client):
    """Its bar of dashboards left out the growth, workload and time-limit pages."""
    page = administrator_client.get(reverse("billing:dashboards:monthly")).content.decode()
    for name in ("savings", "travel", "turnaround", "volume", "growth", "workload", "timeliness", "exams"):
        assert f'href="{reverse(f"billing:dashboards:{name}")}"' in page, name


@pytest.mark.parametrize(
    ("month", "message"),
    [("", "请选择月份。"), ("2025-13", "请按 YYYY-MM 选择月份。"), ("2999-01", "只能生成已结束月份的月报。")],
)
def test_a_bad_month_is_refused_with_a_message(administrator_client, month, message):
    response = administrator_client.post(reverse("billing:dashboards:monthly"), {"month": month})
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not MonthlyReport.objects.exists()


def test_technologists_and_radiologists_get_403(technologist_client, radiologist_client, month_of_exams):
    report = monthly.make_report(SEPTEMBER)
    for client in (technologist_client, radiologist_client):
        assert client.get(reverse("billing:dashboards:monthly")).status_code == 403
        assert client.post(reverse("billing:dashboards:monthly"), {"month": "2025-09"}).status_code == 403
        assert client.get(reverse("billing:dashboards:monthly_pdf", args=[report.uuid])).status_code == 403
    assert MonthlyReport.objects.count() == 1
