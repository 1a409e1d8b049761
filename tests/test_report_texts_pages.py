"""The report texts on the pages: the reading page's normal report, templates and phrases,
the phrases page, the templates page's form, and the department's phrases in the admin."""

from __future__ import annotations

import json
import re

import pytest
from django.urls import reverse

from cloudpacs.models import BodyPart
from consults.models import Consult, Phrase, ReportTemplate
from facilities.models import AuditEvent, User
from tests.conftest import login
from tests.factories import make_consult, make_study, make_user


@pytest.fixture(autouse=True)
def _fast_passwords(settings) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def chest_dr(township, dr_modality, radiologist) -> Consult:
    consult = make_consult(township, make_study(township, dr_modality, description="胸部正位"), body_part_names="胸部")
    login(radiologist).post(reverse("reading:claim", args=[consult.uuid]))
    return consult


def data_block(body: str, name: str):
    match = re.search(rf'<script id="{name}" type="application/json">(.*?)</script>', body, re.S)
    assert match, name
    return json.loads(match.group(1))


def test_the_reading_page_offers_the_normal_report_for_the_studys_kind_and_parts(radiologist_client, chest_dr):
    body = radiologist_client.get(reverse("reading:page", args=[chest_dr.uuid])).content.decode()

    normal = data_block(body, "normal-report-data")
    assert normal["impression"] == "心、肺、膈未见明显异常。"
    assert normal["templates"] == ["胸部正位片（正常）"]
    assert 'id="normal-report"' in body
    templates = data_block(body, "report-templates")
    assert templates[0]["name"] == "胸部正位片（正常）" and templates[0]["fits"]
    assert {t["name"] for t in templates} >= {"膝关节正侧位片（正常）"}  # the other DR parts, after it
    assert "头颅 CT 平扫（正常）" not in body


def test_in_english_the_texts_are_english(radiologist_client, chest_dr):
    radiologist_client.cookies["django_language"] = "en"
    body = radiologist_client.get(reverse("reading:page", args=[chest_dr.uuid])).content.decode()

    assert data_block(body, "normal-report-data")["impression"] == "Normal heart, lungs and diaphragm."


def test_without_a_known_part_the_page_says_so_instead_of_guessing(radiologist_client, township, dr_modality):
    consult = make_consult(township, make_study(township, dr_modality), body_part_names="")
    radiologist_client.post(reverse("reading:claim", args=[consult.uuid]))
    body = radiologist_client.get(reverse("reading:page", args=[consult.uuid])).content.decode()

    assert 'id="normal-report-none"' in body and 'id="normal-report"' not in body
    assert data_block(body, "normal-report-data") is None


def test_the_sign_buttons_wait_for_the_pages_script(radiologist_client, chest_dr):
    body = radiologist_client.get(reverse("reading:page", args=[chest_dr.uuid])).content.decode()

    signs = re.findall(r"<button[^>]*data-confirm-sign[^>]*>", body)
    assert len(signs) == 2 and all(" disabled" in tag for tag in signs)


def test_the_reading_page_lists_the_readers_phrases_and_the_departments(radiologist_client, radiologist, chest_dr):
    Phrase.objects.create(owner=radiologist, text="建议结合临床。", shortcut="jhlc")
    Phrase.objects.create(text="请随访复查。", shortcut="sf")
    Phrase.objects.create(owner=make_user(User.Role.RADIOLOGIST, None, username="dr_zhao"), text="别人的。")
    body = radiologist_client.get(reverse("reading:page", args=[chest_dr.uuid])).content.decode()

    phrases = data_block(body, "report-phrases")
    assert [(p["shortcut"], p["department"]) for p in phrases] == [("jhlc", False), ("sf", True)]
    assert "别人的。" not in body


def test_a_radiologist_adds_and_deletes_a_phrase_of_their_own(radiologist_client, radiologist):
    response = radiologist_client.post(
        reverse("reading:phrases"), {"shortcut": "FJZ", "text": "附见脂肪肝。", "kind": "", "language": "zh-hans"}
    )
    assert response.status_code == 302
    phrase = Phrase.objects.get(owner=radiologist)
    assert (phrase.shortcut, phrase.text) == ("fjz", "附见脂肪肝。")
    assert "附见脂肪肝。" in radiologist_client.get(reverse("reading:phrases")).content.decode()
    assert AuditEvent.objects.filter(action="consults.phrase.created", actor=radiologist).exists()

    again = radiologist_client.post(
        reverse("reading:phrases"), {"shortcut": "fjz", "text": "另一条。", "language": "zh-hans"}, follow=True
    )
    assert "已用于您的另一条常用语" in again.content.decode()
    bad = radiologist_client.post(
        reverse("reading:phrases"), {"shortcut": "脂肪", "text": "一条。", "language": "zh-hans"}, follow=True
    )
    assert "缩写只能由字母和数字组成" in bad.content.decode()

    assert radiologist_client.post(reverse("reading:delete_phrase"), {"phrase": phrase.uuid}).status_code == 302
    assert not Phrase.objects.filter(pk=phrase.pk).exists()


def test_a_radiologist_cannot_delete_the_departments_or_anothers_phrase(radiologist_client):
    department = Phrase.objects.create(text="科室的。")
    others = Phrase.objects.create(owner=make_user(User.Role.RADIOLOGIST, None, username="dr_zhao"), text="别人的。")
    for phrase in (department, others):
        assert radiologist_client.post(reverse("reading:delete_phrase"), {"phrase": phrase.uuid}).status_code == 404
    assert Phrase.objects.count() == 2


def test_a_radiologists_template_is_offered_for_the_parts_chosen(radiologist_client, radiologist):
    knee = BodyPart.objects.get(code="KNEE")
    response = radiologist_client.post(
        reverse("reading:templates"),
        {
            "kind": "DR",
            "body_part": "膝",
            "parts": [knee.pk],
            "name": "膝关节（本人）",
            "findings": "膝关节未见异常。",
            "impression": "膝关节未见异常。",
        },
    )
    assert response.status_code == 302
    template = ReportTemplate.objects.get(name="膝关节（本人）")
    assert list(template.parts.values_list("code", flat=True)) == ["KNEE"]
    assert template.author == radiologist and template.language == "zh-hans"


def test_the_templates_page_shows_the_librarys_version_and_the_departments_edits(radiologist_client):
    ReportTemplate.objects.filter(library_key="dr-chest", language="zh-hans").update(impression="本院写法。")
    body = radiologist_client.get(reverse("reading:templates")).content.decode()

    assert "模板库 v1" in body and "科室已修改" in body


def test_an_administrator_keeps_the_departments_phrases_in_the_admin(county, radiologist):
    administrator = make_user(User.Role.ADMINISTRATOR, county, username="admin_zhang", is_staff=True)
    client = login(administrator)
    Phrase.objects.create(owner=radiologist, text="个人的。")

    response = client.post(
        reverse("admin:consults_phrase_add"),
        {"shortcut": "SF", "text": "建议定期复查。", "kind": "", "language": "zh-hans", "is_active": "on"},
    )
    assert response.status_code == 302
    phrase = Phrase.objects.get(text="建议定期复查。")
    assert phrase.owner is None and phrase.shortcut == "sf"
    listing = client.get(reverse("admin:consults_phrase_changelist")).content.decode()
    assert "建议定期复查。" in listing and "个人的。" not in listing
    assert AuditEvent.objects.filter(action="consults.phrase.added").exists()
