"""Each role's home page: where "/" sends them and what the page shows."""

from __future__ import annotations

import itertools
from datetime import date, timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone
from pydicom.uid import generate_uid

from billing.models import LedgerEntry, PriceSchedule
from cloudpacs.models import Patient, Series, Study
from consults.models import Addendum, Consult, Priority, Report
from facilities.models import ExamKind
from tests import factories

_ids = itertools.count(1)


def make_study(facility, modality=None, *, name="张三", description="胸部平扫"):
    patient = Patient.objects.create(
        facility=facility, patient_id=f"P{next(_ids):05d}", name=name, name_ideographic=name, sex="M"
    )
    study = Study.objects.create(
        study_uid=generate_uid(),
        patient=patient,
        facility=facility,
        modality=modality,
        study_date=date(2025, 9, 1),
        description=description,
        status=Study.Status.ARRIVED,
        number_of_series=1,
        number_of_instances=120,
    )
    Series.objects.create(
        series_uid=generate_uid(),
        study=study,
        modality="CT",
        series_number=2,
        description="肺窗",
        number_of_instances=120,
    )
    return study


def make_consult(facility, study=None, **fields):
    """The factory's consult, arrived 20 minutes ago: a wait the pages show in minutes."""
    fields.setdefault("arrived_at", timezone.now() - timedelta(minutes=20))
    return factories.make_consult(facility, study, **fields)


def test_an_anonymous_visitor_is_sent_to_the_login_page(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_the_login_page_is_in_chinese_with_a_language_switch(client):
    response = client.get(reverse("login"))
    assert response.status_code == 200
    page = response.content.decode()
    assert "登录" in page
    assert 'name="language" value="en"' in page
    assert reverse("set_language") in page


def test_a_technologist_is_sent_to_their_facility_page(technologist_client, technologist, township):
    response = technologist_client.get("/")
    assert response.status_code == 302
    assert response["Location"] == reverse("consults:facility", args=[township.uuid])


def test_the_facility_page_lists_the_facilitys_consults_with_a_report_link_when_signed(
    technologist_client, township, other_township, ct_modality
):
    signed = make_consult(
        township,
        make_study(township, ct_modality, name="王五"),
        status=Consult.Status.SIGNED,
        signed_at=timezone.now(),
        body_part_names="胸部",
    )
    waiting = make_consult(township, make_study(township, ct_modality, name="赵六"))
    make_consult(other_township, make_study(other_township, name="外乡人"))

    response = technologist_client.get(reverse("consults:facility", args=[township.uuid]))

    assert response.status_code == 200
    assert "consults/facility.html" in [t.name for t in response.templates]
    page = response.content.decode()
    assert township.name in page
    assert "王五" in page and "赵六" in page
    assert "外乡人" not in page
    assert reverse("consults:detail", args=[signed.uuid]) in page
    assert "查看报告" in page
    assert waiting.get_status_display() in page
    assert reverse("cloudpacs:study", args=[signed.study.study_uid]) in page


def test_the_facility_page_shows_studies_still_arriving(technologist_client, township, ct_modality):
    study = make_study(township, ct_modality, name="孙七")
    study.status = Study.Status.RECEIVING
    study.save()
    page = technologist_client.get(reverse("consults:facility", args=[township.uuid])).content.decode()
    assert "接收中的检查" in page
    assert "孙七" in page


def test_a_radiologist_is_sent_to_the_worklist(radiologist_client):
    response = radiologist_client.get("/")
    assert response.status_code == 302
    assert response["Location"] == reverse("consults:worklist")


def test_the_worklist_shows_an_arriving_consult_and_not_a_signed_one(radiologist_client, township, ct_modality):
    arriving = make_consult(township, make_study(township, ct_modality, name="刚到达"))
    make_consult(
        township,
        make_study(township, ct_modality, name="已签发者"),
        status=Consult.Status.SIGNED,
        signed_at=timezone.now(),
    )

    response = radiologist_client.get(reverse("consults:worklist"))

    assert response.status_code == 200
    assert "consults/worklist.html" in [t.name for t in response.templates]
    page = response.content.decode()
    assert "刚到达" in page
    assert "已签发者" not in page
    assert reverse("reading:page", args=[arriving.uuid]) in page
    assert township.short_name in page


def test_the_worklist_puts_emergencies_first_then_the_longest_waiting(radiologist_client, township):
    now = timezone.now()
    routine_old = make_consult(township, priority=Priority.ROUTINE, arrived_at=now - timedelta(hours=3))
    urgent = make_consult(township, priority=Priority.URGENT, arrived_at=now - timedelta(minutes=5))
    emergency = make_consult(township, priority=Priority.EMERGENCY, arrived_at=now - timedelta(minutes=1))
    routine_new = make_consult(township, priority=Priority.ROUTINE, arrived_at=now - timedelta(minutes=30))

    response = radiologist_client.get(reverse("consults:worklist"))

    order = [consult.uuid for consult in response.context["page"].object_list]
    assert order == [emergency.uuid, urgent.uuid, routine_old.uuid, routine_new.uuid]


def test_the_worklist_filters_by_facility_modality_status_and_mine(
    radiologist_client, radiologist, township, other_township
):
    here_ct = make_consult(township, kind=ExamKind.CT)
    there_dr = make_consult(other_township, kind=ExamKind.DR)
    mine = make_consult(
        township,
        kind=ExamKind.DR,
        status=Consult.Status.ASSIGNED,
        radiologist=radiologist,
        assigned_at=timezone.now(),
    )

    def listed(**query):
        response = radiologist_client.get(reverse("consults:worklist"), query)
        return {consult.uuid for consult in response.context["page"].object_list}

    assert listed() == {here_ct.uuid, there_dr.uuid, mine.uuid}
    assert listed(facility=other_township.code) == {there_dr.uuid}
    assert listed(modality="CT") == {here_ct.uuid}
    assert listed(status="assigned") == {mine.uuid}
    assert listed(mine="1") == {mine.uuid}
    # A value that is no filter (a signed status is never on the worklist) filters nothing.
    assert listed(modality="MR", status="signed") == {here_ct.uuid, there_dr.uuid, mine.uuid}
    assert listed(modality="MR", mine="1") == {mine.uuid}


def test_an_administrator_is_sent_to_the_dashboard(administrator_client):
    response = administrator_client.get("/")
    assert response.status_code == 302
    assert response["Location"] == reverse("billing:dashboard")


def test_the_dashboard_shows_empty_frames_and_real_headline_numbers(administrator_client, township):
    schedule = PriceSchedule.objects.create(code="shaanxi-2021", name="陕西 2021", effective_from=date(2021, 1, 1))
    for n in range(3):
        consult = make_consult(township, status=Consult.Status.SIGNED, signed_at=timezone.now())
        LedgerEntry.objects.create(
            consult=consult,
            facility=township,
            exam_kind=ExamKind.CT,
            exam_date=date(2025, 9, 1),
            body_parts=1 + n,
            schedule=schedule,
            county_price=Decimal("180.00"),
            township_price=Decimal("150.00"),
            saving=Decimal("30.00") * (1 + n) * 1000,
        )
    make_consult(township)

    response = administrator_client.get(reverse("billing:dashboard"))

    assert response.status_code == 200
    assert "billing/dashboard.html" in [t.name for t in response.templates]
    assert response.context["consult_count"] == 4
    assert response.context["open_count"] == 1
    page = response.content.decode()
    assert "180,000.00" in page  # yuan: 30 000 + 60 000 + 90 000
    assert "18.00" in page  # 万元
    for frame in ("frame-savings", "frame-turnaround", "frame-volume"):
        assert f'id="{frame}"' in page
    for name in ("savings", "turnaround", "volume"):
        assert f'href="{reverse(f"billing:dashboards:{name}")}"' in page


@pytest.mark.parametrize("language", ["zh-hans", "en"])
def test_the_overview_links_every_report(administrator_client, township, language):
    """It linked five of the ten: the patients' savings, growth, workload, time limits and
    the exam list (the administrators' newer reports) were only in the dashboards' own bar."""
    administrator_client.post(reverse("set_language"), {"language": language, "next": "/"})
    page = administrator_client.get(reverse("billing:dashboard")).content.decode()
    names = ("savings", "travel", "turnaround", "volume", "growth", "workload", "timeliness", "exams", "monthly")
    for name in names:
        assert f'id="frame-{name}"' in page, name
        assert f'href="{reverse(f"billing:dashboards:{name}")}"' in page, name
    assert f'href="{reverse("consults:open_consults")}"' in page


def test_the_dashboard_is_not_for_technologists_or_radiologists(technologist_client, radiologist_client):
    assert technologist_client.get(reverse("billing:dashboard")).status_code == 403
    assert radiologist_client.get(reverse("billing:dashboard")).status_code == 403


def test_the_study_page_shows_patient_series_and_consult_status(radiologist_client, township, ct_modality):
    study = make_study(township, ct_modality, name="周八", description="头颅平扫")
    make_consult(township, study)

    response = radiologist_client.get(reverse("cloudpacs:study", args=[study.study_uid]))

    assert response.status_code == 200
    page = response.content.decode()
    assert "周八" in page
    assert "<dd>男" in page
    assert "头颅平扫" in page
    assert "肺窗" in page
    assert "待分配" in page


def test_the_consult_page_shows_the_signed_report_and_its_addenda(technologist_client, township, radiologist):
    consult = make_consult(township, make_study(township), status=Consult.Status.SIGNED, signed_at=timezone.now())
    report = Report.objects.create(
        consult=consult,
        findings="双肺纹理清晰。",
        impression="胸部 CT 未见明显异常。",
        author=radiologist,
        signed_by=radiologist,
        signed_at=timezone.now(),
    )
    Addendum.objects.create(report=report, author=radiologist, text="补充：建议随访。")

    page = technologist_client.get(reverse("consults:detail", args=[consult.uuid])).content.decode()

    assert "双肺纹理清晰。" in page
    assert "胸部 CT 未见明显异常。" in page
    assert "补充：建议随访。" in page
    assert str(radiologist) in page
    # Reading it is not the receipt: the page offers the 已收到 button, whose POST records it.
    assert reverse("reading:receive", args=[consult.uuid]) in page
    consult.refresh_from_db()
    assert consult.status == Consult.Status.SIGNED
    assert consult.delivered_at is None


def test_the_consult_page_withholds_a_report_that_is_not_signed(technologist_client, township, radiologist):
    consult = make_consult(
        township, status=Consult.Status.PRELIMINARY, radiologist=radiologist, preliminary_at=timezone.now()
    )
    Report.objects.create(consult=consult, findings="草稿所见", impression="草稿意见", author=radiologist)

    page = technologist_client.get(reverse("consults:detail", args=[consult.uuid])).content.decode()

    assert "草稿意见" not in page
    assert "报告尚未签发" in page


def test_the_worklist_is_forbidden_to_technologists_and_administrators(technologist_client, administrator_client):
    assert technologist_client.get(reverse("consults:worklist")).status_code == 403
    assert administrator_client.get(reverse("consults:worklist")).status_code == 403


def test_the_worklist_offers_a_claim_and_shows_the_time_left(radiologist_client, radiologist, township):
    from datetime import timedelta

    now = timezone.now()
    waiting = Consult.objects.create(
        facility=township, kind=ExamKind.DR, exam_date=now.date(), arrived_at=now, due_at=now + timedelta(minutes=90)
    )
    late = Consult.objects.create(
        facility=township,
        kind=ExamKind.CT,
        exam_date=now.date(),
        arrived_at=now - timedelta(hours=5),
        due_at=now - timedelta(hours=1),
        radiologist=radiologist,
        assigned_at=now - timedelta(hours=4),
        status=Consult.Status.ASSIGNED,
    )
    page = radiologist_client.get(reverse("consults:worklist")).content.decode()

    assert f'action="{reverse("reading:claim", args=[waiting.uuid])}"' in page
    assert f'action="{reverse("reading:claim", args=[late.uuid])}"' not in page
    assert f'href="{reverse("reading:page", args=[late.uuid])}"' in page
    assert "已超时" in page
    assert "1\xa0小时" in page or "1 小时" in page

    response = radiologist_client.post(reverse("reading:claim", args=[waiting.uuid]), {"next": "/worklist/"})
    assert response.status_code == 302
    waiting.refresh_from_db()
    assert waiting.radiologist == radiologist


def test_the_worklist_counts_down_the_time_left_of_a_consult_not_yet_due(radiologist_client, township):
    now = timezone.now()
    Consult.objects.create(
        facility=township,
        kind=ExamKind.DR,
        exam_date=now.date(),
        arrived_at=now,
        due_at=now + timedelta(hours=2, minutes=30),
    )

    page = radiologist_client.get(reverse("consults:worklist")).content.decode()

    cell = page.split('<td><span class="status status-arrived">')[0].rsplit("<td>", 1)[1]
    assert "2\xa0小时" in cell and ("29\xa0分钟" in cell or "30\xa0分钟" in cell)
    assert "0\xa0分钟" not in cell
    assert "已超时" not in page


def test_the_worklist_offers_to_take_the_next_case(radiologist_client):
    page = radiologist_client.get(reverse("consults:worklist")).content.decode()

    assert f'action="{reverse("reading:claim_next")}"' in page
    assert "领取下一例" in page


def test_pages_show_a_chinese_name_without_separators_and_sex_as_a_word(
    technologist_client, radiologist_client, township, ct_modality
):
    study = make_study(township, ct_modality)
    Patient.objects.filter(pk=study.patient_id).update(
        name="Wu^Chao=吴^超", name_alphabetic="Wu^Chao", name_ideographic="吴^超", sex="F"
    )
    consult = make_consult(township, study)

    pages = [
        technologist_client.get(reverse("consults:facility", args=[township.uuid])),
        technologist_client.get(reverse("consults:detail", args=[consult.uuid])),
        technologist_client.get(reverse("cloudpacs:study", args=[study.study_uid])),
        radiologist_client.get(reverse("consults:worklist")),
        radiologist_client.get(reverse("reading:page", args=[consult.uuid])),
    ]
    for response in pages:
        body = response.content.decode()
        assert "吴超" in body, response.request["PATH_INFO"]
        assert "吴^超" not in body and "吴 超" not in body
    for response in pages[1:3] + pages[4:]:
        assert "<dd>女</dd>" in response.content.decode() or '<dd id="patient-sex">女</dd>' in response.content.decode()


def _signed(township, radiologist, *, preliminary_by=None):
    consult = make_consult(
        township, make_study(township), status=Consult.Status.SIGNED, signed_at=timezone.now(), body_part_names=""
    )
    Report.objects.create(
        consult=consult,
        findings="双肺纹理清晰。",
        impression="胸部 CT 未见明显异常。",
        author=preliminary_by or radiologist,
        preliminary_by=preliminary_by,
        signed_by=radiologist,
        signed_at=timezone.now(),
    )
    return consult


def test_the_technologists_report_page_has_the_pdf_the_viewer_and_the_critical_finding(
    technologist_client, township, radiologist
):
    from consults import workflow

    consult = _signed(township, radiologist)
    workflow.flag_critical(consult, radiologist, "右侧气胸，请立即处理。")

    page = technologist_client.get(reverse("consults:detail", args=[consult.uuid])).content.decode()

    # Not yet delivered: its print button posts, and the first print records the receipt.
    assert f'action="{reverse("reading:pdf", args=[consult.uuid])}"' in page
    assert f'href="{reverse("viewer:study", args=[consult.study.study_uid])}"' in page
    assert "右侧气胸，请立即处理。" in page
    assert "确认收到危急值" in page  # the township acknowledges it here
    assert "签发医师" in page and "审核医师" not in page


def test_a_report_with_a_second_reader_names_both_signers(technologist_client, township, radiologist, county):
    from facilities.models import User
    from tests.factories import make_user

    junior = make_user(User.Role.RADIOLOGIST, county, username="dr_junior", display_name="赵医生")
    consult = _signed(township, radiologist, preliminary_by=junior)

    page = technologist_client.get(reverse("consults:detail", args=[consult.uuid])).content.decode()

    assert "初诊医师" in page and "审核医师" in page and "签发医师" not in page


def test_the_study_page_links_to_the_viewer_and_to_the_consult_request(technologist_client, township, ct_modality):
    study = make_study(township, ct_modality)

    page = technologist_client.get(reverse("cloudpacs:study", args=[study.study_uid])).content.decode()

    assert f'href="{reverse("viewer:study", args=[study.study_uid])}"' in page
    assert f'href="{reverse("consults:request", args=[study.study_uid])}"' in page
    assert technologist_client.get(reverse("viewer:study", args=[study.study_uid])).status_code == 200


def test_the_body_part_is_named_in_chinese_from_the_files(technologist_client, township, ct_modality):
    study = make_study(township, ct_modality)
    Series.objects.filter(study=study).update(body_part_examined="CHEST")
    consult = make_consult(township, study)

    page = technologist_client.get(reverse("consults:detail", args=[consult.uuid])).content.decode()

    assert '<dd id="body-part">胸部</dd>' in page


def test_the_technologist_corrects_the_request_on_their_own_report_page(technologist_client, township, ct_modality):
    consult = make_consult(township, make_study(township, ct_modality), clinical_history="咳嗽")
    detail = reverse("consults:detail", args=[consult.uuid])

    page = technologist_client.get(detail).content.decode()
    assert f'action="{reverse("reading:request", args=[consult.uuid])}"' in page
    assert '<label for="request-history">' in page

    response = technologist_client.post(
        reverse("reading:request", args=[consult.uuid]),
        {"clinical_history": "咳嗽两周，发热", "priority": "urgent", "question": "排除肺炎", "next": detail},
    )

    assert response.status_code == 302 and response["Location"] == detail
    consult.refresh_from_db()
    assert (consult.clinical_history, consult.priority, consult.question) == (
        "咳嗽两周，发热",
        Priority.URGENT,
        "排除肺炎",
    )


def test_the_correction_form_is_gone_once_a_reader_opened_the_consult(
    technologist_client, radiologist, township, ct_modality
):
    consult = make_consult(
        township,
        make_study(township, ct_modality),
        status=Consult.Status.OPENED,
        radiologist=radiologist,
        assigned_at=timezone.now(),
        opened_at=timezone.now(),
    )

    page = technologist_client.get(reverse("consults:detail", args=[consult.uuid])).content.decode()

    assert "修改会诊申请" not in page


def _patient_consult(township, name_ideographic, name_alphabetic, patient_id, accession, exam_date, **fields):
    study = make_study(township)
    Patient.objects.filter(pk=study.patient_id).update(
        name=f"{name_alphabetic}={name_ideographic}",
        name_ideographic=name_ideographic,
        name_alphabetic=name_alphabetic,
        name_initials="",
        patient_id=patient_id,
    )
    Study.objects.filter(pk=study.pk).update(accession_number=accession)
    from cloudpacs.personname import name_initials

    Patient.objects.filter(pk=study.patient_id).update(name_initials=name_initials(name_alphabetic, name_ideographic))
    return make_consult(township, study, exam_date=exam_date, **fields)


def test_the_technologist_searches_consults_by_name_initials_id_accession_date_and_status(
    technologist_client, township
):
    wu = _patient_consult(township, "吴^超", "Wu^Chao", "P10001", "A2025001", date(2025, 9, 1))
    wang = _patient_consult(township, "王^芳", "", "P10002", "A2025002", date(2025, 9, 5), status=Consult.Status.SIGNED)
    ouyang = _patient_consult(township, "欧阳^修", "Ouyang^Xiu", "Q20003", "B7", date(2025, 10, 1))
    url = reverse("consults:facility", args=[township.uuid])

    def found(**query):
        response = technologist_client.get(url, query)
        assert response.status_code == 200
        return {consult.pk for consult in response.context["page"].object_list}

    assert found(q="吴超") == {wu.pk}  # across the PN separator
    assert found(q="吴") == {wu.pk}
    assert found(q="wc") == {wu.pk}  # pinyin initials, from the characters
    assert found(q="WF") == {wang.pk}  # 王芳 has no letters in its value: initials from pypinyin
    assert found(q="oyx") == {ouyang.pk}
    assert found(q="wu chao") == {wu.pk}
    assert found(q="P10002") == {wang.pk}
    assert found(q="P1") == {wu.pk, wang.pk}  # an ID's beginning
    assert found(q="a2025001") == {wu.pk}  # accession number
    assert found(since="2025-09-02", until="2025-09-30") == {wang.pk}
    assert found(status="signed") == {wang.pk}
    assert found(q="王芳", status="arrived") == set()
    assert found() == {wu.pk, wang.pk, ouyang.pk}


def test_a_search_keeps_its_terms_across_pages_and_refuses_a_backward_date_range(technologist_client, township):
    for number in range(52):
        _patient_consult(township, "吴^超", "Wu^Chao", f"P2{number:04d}", "", date(2025, 9, 1))
    url = reverse("consults:facility", args=[township.uuid])

    page = technologist_client.get(url, {"q": "吴超"}).content.decode()
    assert "q=%E5%90%B4%E8%B6%85&amp;page=2" in page
    assert "第 1 / 2 页" in page

    response = technologist_client.get(url, {"since": "2025-09-30", "until": "2025-09-01"})
    assert list(response.context["page"].object_list) == []
    assert "起始日期不能晚于截止日期。" in response.content.decode()
