"""Price editions carry their source and date, and the savings page says which edition
priced each period of exams (docs/savings-ledger.md, "Price editions")."""

from __future__ import annotations

from datetime import date

import pytest
from django.urls import reverse

from billing.models import PriceSchedule
from billing.services import ensure_shaanxi_2021_schedule, record_saving
from facilities.models import ExamKind
from tests.test_dashboards import make_exam, page_tables

SAVINGS = reverse("billing:dashboards:savings")


@pytest.mark.django_db
def test_the_2021_edition_carries_the_notice_it_was_published_by():
    schedule = ensure_shaanxi_2021_schedule()
    assert schedule.published_on == date(2022, 2, 23)
    assert "陕西省医疗服务项目价格(2021版)" in schedule.source
    assert schedule.source_url.endswith("t20220223_2369326.shtml")
    # Applied from the start of its edition's year: the paper prices every exam of its
    # study, from 2022-01-01, with this list.
    assert schedule.effective_from == date(2021, 1, 1)
    assert "2022-01-01 至 2022-02-22" in schedule.basis


@pytest.mark.django_db
def test_an_edition_created_without_a_source_gets_it_and_keeps_its_dates():
    PriceSchedule.objects.create(code="shaanxi-2021", name="陕西 2021", effective_from=date(2021, 6, 1))
    schedule = ensure_shaanxi_2021_schedule()
    assert schedule.published_on == date(2022, 2, 23)
    assert schedule.effective_from == date(2021, 6, 1)
    assert schedule.items.count() == 4


@pytest.mark.django_db
def test_the_savings_page_says_which_edition_priced_which_exams(
    township, dr_modality, radiologist, administrator_client
):
    ensure_shaanxi_2021_schedule()
    for day in (date(2022, 1, 3), date(2022, 2, 22), date(2022, 2, 23), date(2023, 5, 4)):
        record_saving(make_exam(township, ExamKind.DR, day, 20, radiologist))
    response = administrator_client.get(SAVINGS)
    rows = page_tables(response)["editions-table"]
    assert rows[1][0] == "陕西省医疗服务项目价格（2021 版）"
    assert rows[1][2:] == ["2022-02-23", "2021-01-01", "2022-01-03 – 2023-05-04", "4"]
    # The two exams before the notice's date are said to be priced by it all the same.
    assert "2 条记录的检查早于该版发布日期（2022-02-23）" in rows[2][0]
    # A range after the notice has nothing to explain.
    later = page_tables(administrator_client.get(SAVINGS, {"date_from": "2022-03-01"}))["editions-table"]
    assert later[1][4] == "2023-05-04 – 2023-05-04"
    assert len(later) == 2


def edition_figures(uses) -> list[tuple[str, date, date, int, int]]:
    return [(u.schedule.code, u.first, u.last, u.entries, u.before_publication) for u in uses]


@pytest.mark.django_db
def test_the_editions_from_the_rollup_are_the_editions_counted_from_the_entries(
    township, other_township, dr_modality, radiologist, administrator
):
    from billing.dashboards import Filters, editions
    from billing.reports import savings
    from billing.services import reverse_entry

    schedule = ensure_shaanxi_2021_schedule()
    for facility, day in (
        (township, date(2022, 1, 3)),
        (township, date(2022, 2, 22)),
        (other_township, date(2022, 2, 10)),
        (township, date(2022, 3, 1)),
        (other_township, date(2023, 5, 4)),
    ):
        entry = record_saving(make_exam(facility, ExamKind.DR, day, 20, radiologist))
    reverse_entry(entry, "重复登记", administrator)
    for filters in (
        Filters(),
        Filters(facility=township),
        Filters(date_from=date(2022, 2, 1), date_to=date(2022, 12, 31)),
        Filters(date_from=date(2022, 2, 23)),
        Filters(kind=ExamKind.CT),
        Filters(date_to=date(2021, 12, 31)),
    ):
        from_entries = [u for u in (savings._edition_from_ledger(schedule, filters),) if u is not None]
        assert edition_figures(editions(filters)) == edition_figures(from_entries), filters
    assert edition_figures(editions(Filters())) == [("shaanxi-2021", date(2022, 1, 3), date(2023, 5, 4), 6, 3)]


@pytest.mark.django_db
def test_an_edition_whose_dates_were_changed_after_it_priced_exams_is_counted_from_its_entries(
    township, dr_modality, radiologist
):
    from billing.dashboards import Filters, editions

    schedule = ensure_shaanxi_2021_schedule()
    for day in (date(2022, 1, 3), date(2023, 5, 4)):
        record_saving(make_exam(township, ExamKind.DR, day, 20, radiologist))
    # Its dates no longer cover the first exam it priced: the rollup cannot say which
    # entries are its own, its entries can.
    PriceSchedule.objects.filter(pk=schedule.pk).update(effective_from=date(2023, 1, 1))
    assert edition_figures(editions(Filters())) == [("shaanxi-2021", date(2022, 1, 3), date(2023, 5, 4), 2, 1)]
    # And an edition whose dates overlap another's.
    PriceSchedule.objects.filter(pk=schedule.pk).update(effective_from=date(2021, 1, 1))
    PriceSchedule.objects.create(code="later", name="later", effective_from=date(2023, 1, 1))
    assert edition_figures(editions(Filters())) == [("shaanxi-2021", date(2022, 1, 3), date(2023, 5, 4), 2, 1)]
