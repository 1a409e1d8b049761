"""The report texts (consults.report_texts): the template library as the migrations install
and upgrade it, the normal report chosen for a study's kind and body parts, and the
radiologists' phrase banks."""

from __future__ import annotations

import copy
import importlib

import pytest
from django.apps import apps as django_apps
from django.utils import timezone

from cloudpacs import orders
from cloudpacs.models import BodyPart, Order, Series
from consults import report_texts, template_library
from consults.models import Phrase, ReportTemplate
from consults.rules import NotAllowed, WorkflowError
from consults.template_library import v1
from facilities.models import ExamKind, User
from tests.factories import make_consult, make_study, make_user

pytestmark = pytest.mark.django_db


# --- The library ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [ExamKind.CT, ExamKind.DR])
@pytest.mark.parametrize("language", ["zh-hans", "en"])
def test_every_part_of_each_kind_has_a_normal_report_in_both_languages(kind, language):
    for part in orders.body_parts_for_kind(kind):
        report = report_texts.normal_report(kind, [part.code], language)
        assert report is not None, f"{kind} {part.code} {language}"
        assert report.missing == []
        assert report.templates[0].library_key and report.templates[0].language == language


def test_the_library_is_installed_with_its_version_and_nothing_edited():
    rows = ReportTemplate.objects.exclude(library_key="")
    assert rows.count() == 2 * len(v1.LIBRARY)
    assert set(rows.values_list("library_version", flat=True)) == {v1.VERSION}
    assert not any(row.is_edited for row in rows)


def test_the_chinese_texts_are_chinese_and_the_english_english():
    for row in ReportTemplate.objects.exclude(library_key=""):
        has_chinese = any("\u4e00" <= char <= "\u9fff" for char in row.findings + row.impression)
        assert has_chinese == (row.language == "zh-hans"), row.library_key


def install(library, version):
    return template_library.install(ReportTemplate, BodyPart, library, version)


def test_an_upgrade_rewrites_untouched_templates_and_keeps_the_hospitals_edits():
    edited = ReportTemplate.objects.get(library_key="dr-chest", language="zh-hans")
    edited.impression = "两肺、心、膈未见异常。"  # the department's own wording
    edited.save()
    switched_off = ReportTemplate.objects.get(library_key="ct-head", language="zh-hans")
    switched_off.is_active = False
    switched_off.save()
    v2 = copy.deepcopy(v1.LIBRARY)
    for entry in v2:
        for language in ("zh-hans", "en"):
            label, name, findings, impression = entry[language]
            entry[language] = (label, name, findings + " v2", impression)
    v2.append({**copy.deepcopy(v2[0]), "key": "ct-new"})

    counts = install(v2, 2)

    assert counts == {"created": 2, "updated": 2 * len(v1.LIBRARY) - 1, "kept": 1, "current": 0}
    edited.refresh_from_db()
    assert edited.impression == "两肺、心、膈未见异常。" and not edited.findings.endswith("v2")
    assert edited.library_version == 1 and edited.is_edited
    switched_off.refresh_from_db()
    assert switched_off.findings.endswith(" v2") and not switched_off.is_active
    assert switched_off.library_version == 2 and not switched_off.is_edited
    # Installing the same version again changes nothing; the edited one stays the hospital's.
    assert install(v2, 2) == {"created": 0, "updated": 0, "kept": 1, "current": 2 * len(v2) - 1}


def test_the_six_old_templates_give_way_unless_a_hospital_edited_them():
    migration = importlib.import_module("consults.migrations.0011_report_library_v1")
    old = importlib.import_module("consults.migrations.0003_builtin_report_templates")
    _, _, name, findings, impression = old.TEMPLATES[0]
    untouched = ReportTemplate.objects.create(
        kind="CT", body_part="头颅", name=name, findings=findings, impression=impression
    )
    _, _, name, findings, impression = old.TEMPLATES[5]
    edited = ReportTemplate.objects.create(
        kind="DR", body_part="四肢", name=name, findings="本院写法。", impression=impression
    )

    migration.install_v1(django_apps, None)

    assert not ReportTemplate.objects.filter(pk=untouched.pk).exists()
    assert set(edited.parts.values_list("code", flat=True)) == set(v1.LIMB_BONES)


# --- The normal report ---------------------------------------------------------------------------


def test_the_normal_report_is_the_template_of_the_kind_and_part():
    dr_chest = report_texts.normal_report("DR", ["CHEST"], "zh-hans")
    ct_chest = report_texts.normal_report("CT", ["CHEST"], "zh-hans")
    assert dr_chest.templates[0].library_key == "dr-chest"
    assert dr_chest.impression == "心、肺、膈未见明显异常。"
    assert ct_chest.templates[0].library_key == "ct-chest"
    assert report_texts.normal_report("DR", ["KNEE"], "zh-hans").templates[0].library_key == "dr-knee"
    assert report_texts.normal_report("DR", ["hand"], "zh-hans").templates[0].library_key == "dr-limb"
    assert report_texts.normal_report("DR", ["CHEST"], "en").impression == "Normal heart, lungs and diaphragm."
    assert report_texts.normal_report("CT", [], "zh-hans") is None
    assert report_texts.normal_report("CT", ["CLAVICLE"], "zh-hans") is None  # a DR part only


def test_several_parts_give_each_parts_findings_under_its_name_and_numbered_impressions():
    report = report_texts.normal_report("CT", ["CHEST", "ABDOMEN", "FOOT"], "zh-hans")

    assert [t.library_key for t in report.templates] == ["ct-chest", "ct-abdomen"]
    assert report.findings.startswith("胸部：胸廓对称。")
    assert "\n\n腹部：肝脏大小" in report.findings
    assert report.impression == "1. 胸部 CT 平扫未见明显异常。\n2. 上腹部 CT 平扫未见明显异常。"
    assert report.missing == ["FOOT"]
    english = report_texts.normal_report("CT", ["CHEST", "ABDOMEN"], "en")
    assert english.findings.startswith("Chest: The thorax is symmetric.")


def test_one_template_for_two_of_the_parts_is_used_once():
    report = report_texts.normal_report("DR", ["HAND", "WRIST"], "zh-hans")
    assert [t.library_key for t in report.templates] == ["dr-limb"]
    assert report.impression == "所摄骨关节未见明显异常。"


def test_a_department_template_stands_in_for_a_library_one_switched_off():
    ReportTemplate.objects.filter(library_key="dr-chest").update(is_active=False)
    own = ReportTemplate.objects.create(
        kind="DR", body_part="胸部", name="本院胸片", findings="所见", impression="未见异常。"
    )
    own.parts.set(BodyPart.objects.filter(code="CHEST"))

    assert report_texts.normal_report("DR", ["CHEST"], "zh-hans").templates == [own]


def test_a_consults_parts_come_from_its_request_else_its_order_else_its_series(township, dr_modality, technologist):
    named = make_consult(township, body_part_names="胸部、腰椎正侧位", kind="DR")
    assert report_texts.body_part_codes(named) == ["CHEST", "LSPINE"]
    assert report_texts.body_part_codes(make_consult(township, body_part_names="Chest, Knee", kind="DR")) == [
        "CHEST",
        "KNEE",
    ]

    study = make_study(township, dr_modality)
    Series.objects.filter(study=study).update(body_part_examined="KNEE")
    from_series = make_consult(township, study, kind="DR")
    assert report_texts.body_part_codes(from_series) == ["KNEE"]

    # An order's parts, for a study that came back without BodyPartExamined.
    ordered = make_study(township, dr_modality)
    order = orders.register_order(
        technologist,
        modality=dr_modality,
        patient_id=ordered.patient.patient_id,
        patient_name="张三",
        body_parts=list(BodyPart.objects.filter(code__in=["CHEST", "RIB"])),
        scheduled_at=timezone.now(),
    )
    Order.objects.filter(pk=order.pk).update(study=ordered)
    assert report_texts.body_part_codes(make_consult(township, ordered, kind="DR")) == ["CHEST", "RIB"]


def test_the_templates_offered_for_a_consult_put_those_of_its_parts_first(township):
    consult = make_consult(township, body_part_names="胸部", kind="DR")
    rows = report_texts.templates_for(consult, "zh-hans")

    assert {row.kind for row in rows} == {"DR"} and {row.language for row in rows} == {"zh-hans"}
    assert rows[0].library_key == "dr-chest" and rows[0].fits
    assert not any(row.fits for row in rows[1:])
    assert report_texts.normal_report_for(consult, "zh-hans").templates == [rows[0]]


# --- Phrases -------------------------------------------------------------------------------------


def test_a_radiologist_keeps_their_own_phrases_beside_the_departments(radiologist):
    other = make_user(User.Role.RADIOLOGIST, None, username="dr_wang")
    mine = report_texts.add_phrase(radiologist, text="建议结合临床。", shortcut="JHLC")
    Phrase.objects.create(text="请结合临床及其他检查。", shortcut="lc")
    report_texts.add_phrase(other, text="别人的。", shortcut="br")
    Phrase.objects.create(text="DR 才有的。", kind="DR")

    texts = [row.text for row in report_texts.phrases_for(radiologist, "zh-hans", "CT")]

    assert mine.shortcut == "jhlc"
    assert texts == ["建议结合临床。", "请结合临床及其他检查。"]
    assert report_texts.phrases_for(radiologist, "en").count() == 0


def test_a_shortcut_is_a_radiologists_once(radiologist):
    report_texts.add_phrase(radiologist, text="一。", shortcut="a1")
    with pytest.raises(WorkflowError):
        report_texts.add_phrase(radiologist, text="二。", shortcut="A1")
    report_texts.add_phrase(radiologist, text="One.", shortcut="a1", language="en")


def test_only_radiologists_keep_phrases_and_only_their_own_are_deleted(radiologist, technologist):
    with pytest.raises(NotAllowed):
        report_texts.add_phrase(technologist, text="不行。")
    department = Phrase.objects.create(text="科室的。")
    with pytest.raises(NotAllowed):
        report_texts.delete_phrase(radiologist, department.uuid)
    mine = report_texts.add_phrase(radiologist, text="我的。")
    report_texts.delete_phrase(radiologist, mine.uuid)
    assert not Phrase.objects.filter(pk=mine.pk).exists()
