"""The access layer: who may open which study and consult, logging in, and the audit of views."""

from __future__ import annotations

import itertools
import re
from datetime import date

from django.test import Client
from django.urls import reverse
from pydicom.uid import generate_uid

from cloudpacs.models import Patient, Study
from facilities.access import consults_for, studies_for
from facilities.models import AuditEvent, User
from tests.factories import PASSWORD, make_consult, make_user

_ids = itertools.count(1)


def make_study(facility):
    patient = Patient.objects.create(
        facility=facility, patient_id=f"A{next(_ids):05d}", name="李四", name_ideographic="李四"
    )
    return Study.objects.create(
        study_uid=generate_uid(), patient=patient, facility=facility, study_date=date(2025, 9, 1), description="胸部"
    )


def strip_csrf(content: bytes) -> bytes:
    return re.sub(rb'name="csrfmiddlewaretoken" value="[^"]+"', b"", content)


def study_url(study):
    return reverse("cloudpacs:study", args=[study.study_uid])


def consult_url(consult):
    return reverse("consults:detail", args=[consult.uuid])


def test_a_technologist_opens_a_study_of_their_own_township(technologist_client, township):
    study = make_study(township)
    assert technologist_client.get(study_url(study)).status_code == 200


def test_another_townships_technologist_gets_404_for_the_study(outsider_client, township):
    study = make_study(township)
    make_consult(township, study)
    assert outsider_client.get(study_url(study)).status_code == 404


def test_another_townships_technologist_gets_404_for_the_consult(outsider_client, township):
    consult = make_consult(township, make_study(township))
    assert outsider_client.get(consult_url(consult)).status_code == 404


def test_another_townships_technologist_gets_404_for_the_facility_page(outsider_client, township):
    assert outsider_client.get(reverse("consults:facility", args=[township.uuid])).status_code == 404


def test_the_404_looks_the_same_as_for_a_study_that_does_not_exist(outsider_client, township):
    study = make_study(township)
    hidden = outsider_client.get(study_url(study))
    missing = outsider_client.get(reverse("cloudpacs:study", args=["1.2.3.4.5"]))
    assert hidden.status_code == missing.status_code == 404
    # Only the language switch's CSRF token and its way back to the same address may differ.
    hidden_page = strip_csrf(hidden.content).replace(study_url(study).encode(), b"URL")
    missing_page = strip_csrf(missing.content).replace(b"/studies/1.2.3.4.5/", b"URL")
    assert hidden_page == missing_page


def test_a_radiologist_sees_studies_sent_for_reading_from_any_township(radiologist_client, township, other_township):
    here = make_study(township)
    there = make_study(other_township)
    make_consult(township, here)
    make_consult(other_township, there)
    assert radiologist_client.get(study_url(here)).status_code == 200
    assert radiologist_client.get(study_url(there)).status_code == 200


def test_a_radiologist_does_not_see_a_study_that_has_no_consult(radiologist_client, township):
    assert radiologist_client.get(study_url(make_study(township))).status_code == 404


def test_an_administrator_is_not_given_clinical_pages(administrator_client, township):
    study = make_study(township)
    consult = make_consult(township, study)
    assert administrator_client.get(study_url(study)).status_code == 403
    assert administrator_client.get(consult_url(consult)).status_code == 403
    assert administrator_client.get(reverse("consults:facility", args=[township.uuid])).status_code == 403


def test_an_anonymous_visitor_is_sent_to_login_from_a_study(client, township):
    study = make_study(township)
    response = client.get(study_url(study))
    assert response.status_code == 302
    assert response["Location"] == f"{reverse('login')}?next={study_url(study)}"


def test_the_scoped_querysets_follow_the_users_facility(technologist, outsider, radiologist, administrator, township):
    study = make_study(township)
    consult = make_consult(township, study)
    lone_study = make_study(township)

    assert set(studies_for(technologist)) == {study, lone_study}
    assert set(consults_for(technologist)) == {consult}
    assert not studies_for(outsider).exists()
    assert not consults_for(outsider).exists()
    assert set(studies_for(radiologist)) == {study}
    assert set(consults_for(radiologist)) == {consult}
    assert not studies_for(administrator).exists()
    assert not consults_for(administrator).exists()


def test_an_inactive_users_scope_is_empty(technologist, township):
    make_study(township)
    technologist.is_active = False
    assert not studies_for(technologist).exists()


def test_viewing_a_study_writes_an_audit_event(technologist_client, technologist, township):
    study = make_study(township)
    technologist_client.get(study_url(study))
    event = AuditEvent.objects.get(action="cloudpacs.study.viewed")
    assert event.actor == technologist
    assert event.object_id == study.study_uid
    assert event.facility == township


def test_viewing_a_report_writes_an_audit_event(radiologist_client, radiologist, township):
    consult = make_consult(township)
    radiologist_client.get(consult_url(consult))
    event = AuditEvent.objects.get(action="consults.report.viewed")
    assert event.actor == radiologist
    assert event.object_id == str(consult.uuid)


def test_a_refused_view_writes_no_audit_event(outsider_client, township):
    outsider_client.get(study_url(make_study(township)))
    assert not AuditEvent.objects.filter(action="cloudpacs.study.viewed").exists()


def test_logging_in_with_the_right_password_lands_on_the_home_page(technologist, township):
    client = Client()
    response = client.post(reverse("login"), {"username": technologist.username, "password": PASSWORD}, follow=True)
    assert response.redirect_chain[0][0] == reverse("home")
    assert response.redirect_chain[-1][0] == reverse("consults:facility", args=[township.uuid])
    assert response.status_code == 200


def test_logging_in_with_a_wrong_password_shows_an_error(technologist):
    client = Client()
    response = client.post(reverse("login"), {"username": technologist.username, "password": "wrong-password"})
    assert response.status_code == 200
    assert "用户名或密码不正确" in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_logging_out_takes_a_post_and_ends_the_session(technologist_client):
    assert technologist_client.get(reverse("logout")).status_code == 405
    response = technologist_client.post(reverse("logout"))
    assert response.status_code == 302
    assert technologist_client.get("/").status_code == 302
    assert "_auth_user_id" not in technologist_client.session


def test_a_user_without_a_role_who_is_not_staff_is_refused_a_home(township):
    user = make_user("", None, username="norole")
    client = Client()
    client.login(username=user.username, password=PASSWORD)
    assert client.get("/").status_code == 403


def test_urls_carry_opaque_ids_not_sequential_keys(technologist_client, township):
    study = make_study(township)
    consult = make_consult(township, study)
    page = technologist_client.get(reverse("consults:facility", args=[township.uuid])).content.decode()
    assert f"/consults/{consult.uuid}/" in page
    assert f"/studies/{study.study_uid}/" in page
    assert f"/consults/{consult.pk}/" not in page
    assert User.objects.filter(username="tech_xuanwo").exists()


def test_the_dashboards_confine_a_technologist_by_the_same_rule_as_the_patients_pages(
    technologist, outsider, radiologist, administrator, township, other_township, county
):
    """The dashboards had their own copy of "a technologist sees their own township"; both
    now ask facilities.access.confined_to."""
    from facilities.access import confined_to, facilities_for, figure_townships

    for user in (technologist, outsider):
        assert confined_to(user) == user.facility_id
        assert list(figure_townships(user)) == list(facilities_for(user)) == [user.facility]
    for user in (radiologist, administrator):
        assert confined_to(user) is None
        assert set(figure_townships(user)) == {township, other_township}


def test_a_technologist_asking_for_a_township_that_is_not_a_uuid_gets_404(technologist_client, township):
    for asked in ("not-a-uuid", str(township.uuid).upper().replace("-", "x")):
        response = technologist_client.get(reverse("billing:dashboards:turnaround"), {"township": asked})
        assert response.status_code == 404
    page = technologist_client.get(reverse("billing:dashboards:turnaround"), {"township": str(township.uuid)})
    assert page.status_code == 200


REFUSED = "cloudpacs.study.access_refused"


def test_each_page_that_names_another_townships_study_audits_the_refusal_once(outsider_client, outsider, township):
    # The house rule: every view of a study is access-checked and auditable, on the pages
    # as over DICOMweb: the study page, the viewer (and a prior it names), the marks, the
    # consult, the reading page and the report's PDF, each answered 404 and written once.
    study = make_study(township)
    consult = make_consult(township, study)
    uid = study.study_uid
    pages = [
        reverse("cloudpacs:study", args=[uid]),
        reverse("viewer:study", args=[uid]),
        reverse("viewer:marks", args=[uid]),
        reverse("consults:request", args=[uid]),
        reverse("consults:detail", args=[consult.uuid]),
        reverse("reading:page", args=[consult.uuid]),
        reverse("reading:pdf", args=[consult.uuid]),
    ]
    for url in pages:
        assert outsider_client.get(url).status_code == 404, url
    refused = AuditEvent.objects.filter(action=REFUSED).order_by("pk")
    assert refused.count() == len(pages)
    assert {event.object_id for event in refused} == {uid}
    assert {event.facility_id for event in refused} == {township.pk}
    assert {event.actor_id for event in refused} == {outsider.pk}
    assert [event.detail["via"] for event in refused] == [
        "cloudpacs:study",
        "viewer:study",
        "viewer:marks",
        "consults:request",
        "consults:detail",
        "reading:page",
        "reading:pdf",
    ]
    assert refused.filter(detail__consult=str(consult.uuid)).count() == 3


def test_a_prior_of_another_township_named_to_the_viewer_is_refused_and_audited(
    technologist_client, township, other_township
):
    own, foreign = make_study(township), make_study(other_township)
    url = reverse("viewer:study", args=[own.study_uid])
    assert technologist_client.get(url, {"prior": foreign.study_uid}).status_code == 404
    (event,) = AuditEvent.objects.filter(action=REFUSED)
    assert (event.object_id, event.facility_id) == (foreign.study_uid, other_township.pk)


def test_a_page_naming_a_study_that_does_not_exist_writes_nothing(outsider_client, township):
    assert outsider_client.get(reverse("cloudpacs:study", args=["1.2.3.4.5"])).status_code == 404
    assert not AuditEvent.objects.filter(action=REFUSED).exists()


def test_the_audit_page_shows_a_refusal_in_words_chinese_first(administrator_client, outsider_client, township):
    study = make_study(township)
    outsider_client.get(reverse("viewer:study", args=[study.study_uid]))
    page = administrator_client.get("/audit/", {"action": REFUSED}).content.decode()
    assert "越权调阅被拒" in page
    assert "途径" in page
    assert "平梁技师" in page  # the person who tried, by name
