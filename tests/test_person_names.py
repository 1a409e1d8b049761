"""The one Person Name formatter (cloudpacs.personname) and the sex label: what every page,
the PDF and the viewer's overlay show for a DICOM PN value."""

from __future__ import annotations

import pytest
from django.db import connection
from django.template import Context, Template
from django.utils import translation

from cloudpacs.models import Patient
from cloudpacs.personname import format_person_name, sex_label


@pytest.mark.parametrize(
    ("value", "chinese", "english"),
    [
        ("Wu^Chao=吴^超", "吴超", "Wu Chao"),
        ("王^芳", "王芳", "王芳"),
        ("张三^", "张三", "张三"),
        ("=张^三", "张三", "张三"),
        ("ZHANG^SAN", "ZHANG SAN", "ZHANG SAN"),
        ("Li^Si^^Dr.", "Li Si", "Li Si"),
        ("Wu^Chao==wu^chao", "Wu Chao", "Wu Chao"),
        ("==ウ^チャオ", "ウチャオ", "ウチャオ"),
        ("^", "", ""),
        ("", "", ""),
    ],
)
def test_a_pn_value_is_shown_the_chinese_way_and_the_english_way(value, chinese, english):
    assert format_person_name(value, "zh-hans") == chinese
    assert format_person_name(value, "en") == english


def test_the_active_language_decides_when_none_is_given():
    with translation.override("zh-hans"):
        assert format_person_name("Wu^Chao=吴^超") == "吴超"
    with translation.override("en"):
        assert format_person_name("Wu^Chao=吴^超") == "Wu Chao"


def test_a_patient_is_shown_from_its_decoded_groups_and_else_from_its_whole_value():
    patient = Patient(name="Wu^Chao=吴^超", name_alphabetic="Wu^Chao", name_ideographic="吴^超")
    assert format_person_name(patient, "zh-hans") == "吴超"
    assert format_person_name(patient, "en") == "Wu Chao"
    legacy = Patient(name="王^芳")
    assert format_person_name(legacy, "zh-hans") == "王芳"
    assert format_person_name(Patient(name=""), "zh-hans", empty="—") == "—"
    assert format_person_name(None, empty="—") == "—"


def test_the_patients_display_name_and_str_use_the_formatter():
    patient = Patient(patient_id="P1", name="Wu^Chao=吴^超", name_alphabetic="Wu^Chao", name_ideographic="吴^超")
    with translation.override("zh-hans"):
        assert patient.display_name == "吴超"
        assert str(patient) == "吴超 (P1)"


@pytest.mark.parametrize(
    ("code", "chinese", "english"),
    [
        ("M", "男", "Male"),
        ("F", "女", "Female"),
        ("O", "其他", "Other"),
        ("m", "男", "Male"),
        ("", "—", "—"),
        ("U", "U", "U"),
    ],
)
def test_sex_is_shown_as_a_word(code, chinese, english):
    with translation.override("zh-hans"):
        assert sex_label(code) == chinese
    with translation.override("en"):
        assert sex_label(code) == english


def test_the_template_filters_format_names_and_sex():
    template = Template("{% load people %}{{ patient|person_name }}/{{ patient.sex|sex }}/{{ nobody|person_name }}")
    patient = Patient(name="Wu^Chao=吴^超", name_alphabetic="Wu^Chao", name_ideographic="吴^超", sex="F")
    with translation.override("zh-hans"):
        assert template.render(Context({"patient": patient, "nobody": None})) == "吴超/女/—"


@pytest.mark.parametrize(
    ("alphabetic", "ideographic", "initials"),
    [
        ("Wu^Chao", "吴^超", "wc"),
        ("", "王^芳", "wf"),
        ("Ouyang^Xiu Ying", "", "oxy"),
        ("ZHANG^SAN", "", "zs"),
        ("", "", ""),
    ],
)
def test_initials_come_from_the_characters_pinyin_else_from_the_letters(alphabetic, ideographic, initials):
    from cloudpacs.personname import name_initials

    assert name_initials(alphabetic, ideographic) == initials


def test_a_patient_gets_their_initials_when_their_first_image_is_stored(ct_modality, tmp_path):
    from tests.dicomweb_support import ingest
    from tests.factories import make_dataset

    instance = ingest(make_dataset(patient_name="=吴^超", character_set="ISO_IR 192"), ct_modality, tmp_path / "in")

    assert instance.series.study.patient.name_initials == "wc"


@pytest.mark.django_db
def test_names_padded_with_empty_components_are_indexed_and_found_without_them(ct_modality, technologist, tmp_path):
    # Some consoles pad every component (`Zhou^Li^^^`); PS3.5 6.2.1.1 makes that the same
    # name as `Zhou^Li`, which an exact QIDO-RS or C-FIND query names.
    from django.test import Client

    from tests.dicomweb_support import ingest, token_for
    from tests.factories import make_dataset

    ds = make_dataset(
        patient_id="PAD1",
        patient_name="Zhou^Li^^^=周^丽^^^",
        character_set="ISO_IR 192",
        ReferringPhysicianName="^^^^",
    )
    study = ingest(ds, ct_modality, tmp_path).series.study
    patient = Patient.objects.get(pk=study.patient_id)
    assert (patient.name, patient.name_alphabetic, patient.name_ideographic) == ("Zhou^Li=周^丽", "Zhou^Li", "周^丽")
    api = Client(HTTP_AUTHORIZATION=f"Token {token_for(technologist)}", HTTP_ACCEPT="*/*")
    for query in ("Zhou^Li", "ZHOU^LI^^", "周^丽", "周丽", "Zhou^Li=周^丽"):
        (found,) = api.get("/dicomweb/studies", {"PatientName": query}).json()
        assert found["00100010"]["Value"] == [{"Alphabetic": "Zhou^Li", "Ideographic": "周^丽"}], query
        assert found["00080090"] == {"vr": "PN"}, query


@pytest.mark.django_db
def test_a_migration_trims_names_indexed_with_their_padding(ct_modality, tmp_path):
    import importlib

    from django.apps import apps

    from cloudpacs.models import Study
    from tests.dicomweb_support import ingest
    from tests.factories import make_dataset

    study = ingest(make_dataset(patient_id="PAD2"), ct_modality, tmp_path).series.study
    Patient.objects.filter(pk=study.patient_id).update(
        name="Zhou^Li^^^=周^丽^^^", name_alphabetic="Zhou^Li^^^", name_ideographic="周^丽^^^"
    )
    Study.objects.filter(pk=study.pk).update(referring_physician="^^^^", patient_name_received="Zhou^Li^^^=周^丽^^^")
    importlib.import_module("cloudpacs.migrations.0011_trimmed_person_names").trim_names(apps, None)
    patient = Patient.objects.get(pk=study.patient_id)
    assert (patient.name, patient.name_alphabetic, patient.name_ideographic) == ("Zhou^Li=周^丽", "Zhou^Li", "周^丽")
    study.refresh_from_db()
    assert (study.referring_physician, study.patient_name_received) == ("", "Zhou^Li=周^丽")


NAMES = [
    "李明远",
    "王晓峰",
    "张静怡",
    "刘振华",
    "陈思远",
    "杨帆",
    "赵磊",
    "黄丽萍",
    "周敏",
    "吕伟",
    "卢",
    "陈静",
    "Anna",
]


def test_names_sort_by_pinyin_as_a_dictionary_does():
    from facilities.names import by_pinyin

    expected = "Anna 陈静 陈思远 黄丽萍 李明远 刘振华 卢 吕伟 王晓峰 杨帆 张静怡 赵磊 周敏"
    assert by_pinyin(NAMES) == expected.split()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the ICU collation is PostgreSQL's")
def test_the_pinyin_order_is_postgresqls_chinese_collation(db):
    """The order Python gives on either database is ICU's Chinese (zh-x-icu), which only a
    PostgreSQL built with ICU has."""
    from facilities.names import by_pinyin

    chinese = [name for name in NAMES if not name.isascii()]
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_collation WHERE collname = 'zh-x-icu'")
        if cursor.fetchone() is None:
            pytest.skip("this PostgreSQL has no ICU collations")
        cursor.execute('SELECT n FROM unnest(%s::text[]) AS n ORDER BY n COLLATE "zh-x-icu"', [chinese])
        assert [row[0] for row in cursor.fetchall()] == by_pinyin(chinese)
