"""A console's description of a study or series on the English pages: in English where
each of its words is one the platform knows, else as the console wrote it (the English
township page showed "CT · 胸部 CT" for every exam)."""

from __future__ import annotations

import pytest
from django.urls import reverse

from cloudpacs.descriptions import description_in
from consults.models import Consult
from tests.factories import make_consult, make_study
from tests.test_i18n import switch_to_english


@pytest.mark.parametrize(
    ("written", "english"),
    [
        ("胸部 CT", "Chest CT"),
        ("胸部CT", "Chest CT"),
        ("胸部平扫", "Chest non-contrast"),
        ("头颅 平扫 5mm", "Head non-contrast 5mm"),
        ("胸部 正位", "Chest frontal"),
        ("右膝关节正侧位", "Right knee frontal and lateral"),
        ("胸椎", "Thoracic spine"),  # the longest word, not 胸 of 胸部
        ("胸部、腹部 CT 平扫+增强", "Chest, abdomen CT non-contrast and contrast-enhanced"),
        ("CHEST PA", "CHEST PA"),  # no Chinese: as written
        ("肺结节随访", "肺结节随访"),  # words it does not know: as written ...
        ("胸部 肺结节", "胸部 肺结节"),  # ... never half translated
        ("", ""),
    ],
)
def test_an_english_page_shows_a_description_of_known_words_in_english(db, written, english):
    assert description_in(written, "en") == english


def test_a_chinese_page_shows_it_as_written(db):
    assert description_in("胸部 CT", "zh-hans") == "胸部 CT"


def test_the_english_township_page_and_study_page_describe_the_exam_in_english(
    technologist_client, township, ct_modality
):
    study = make_study(township, ct_modality, description="胸部 CT")
    make_consult(township, study=study, status=Consult.Status.SIGNED)
    switch_to_english(technologist_client)

    facility = technologist_client.get(reverse("consults:facility", args=[township.uuid])).content.decode()
    assert "Chest CT" in facility and "胸部 CT" not in facility
    detail = technologist_client.get(reverse("cloudpacs:study", args=[study.study_uid])).content.decode()
    assert "Chest CT" in detail and "胸部 CT" not in detail


def test_the_chinese_pages_keep_the_consoles_words(technologist_client, township, ct_modality):
    study = make_study(township, ct_modality, description="胸部 CT")
    make_consult(township, study=study, status=Consult.Status.SIGNED)

    facility = technologist_client.get(reverse("consults:facility", args=[township.uuid])).content.decode()
    assert "胸部 CT" in facility


def test_the_english_reading_page_describes_the_study_in_english(radiologist_client, township, ct_modality):
    study = make_study(township, ct_modality, description="胸部 CT 平扫")
    consult = make_consult(township, study, body_part_names="胸部")
    switch_to_english(radiologist_client)

    page = radiologist_client.get(reverse("reading:page", args=[consult.uuid])).content.decode()
    assert '<dd id="study-description">Chest CT non-contrast</dd>' in page
