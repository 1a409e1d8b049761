"""Chinese by default, English by the switch in the header; the English catalogue is complete."""

from __future__ import annotations

import ast
import gettext
from datetime import date
from pathlib import Path

from django.conf import settings
from django.test import Client
from django.urls import reverse
from django.utils import timezone, translation

from consults.models import Consult
from facilities.models import ExamKind

LOCALE = Path(settings.BASE_DIR) / "locale" / "en" / "LC_MESSAGES"


def switch_to_english(client: Client, next_url: str = "/") -> None:
    response = client.post(reverse("set_language"), {"language": "en", "next": next_url})
    assert response.status_code == 302


def test_the_home_page_is_in_chinese_by_default(technologist_client, township):
    page = technologist_client.get("/", follow=True).content.decode()
    assert '<html lang="zh-hans">' in page
    assert "本院检查" in page
    assert "退出登录" in page
    assert "Log out" not in page


def test_the_english_switch_turns_the_home_page_into_english(technologist_client, township):
    Consult.objects.create(facility=township, kind=ExamKind.CT, exam_date=date(2025, 9, 1), arrived_at=timezone.now())
    switch_to_english(technologist_client)

    page = technologist_client.get("/", follow=True).content.decode()

    assert '<html lang="en">' in page
    assert "Our studies" in page
    assert "Log out" in page
    assert "Consults and reports" in page
    assert "Waiting" in page  # a model choice, translated through the same catalogue
    assert "本院检查" not in page
    assert "退出登录" not in page


def test_an_english_browser_still_gets_chinese_until_the_switch(client):
    page = client.get(reverse("login"), HTTP_ACCEPT_LANGUAGE="en-US,en;q=0.9").content.decode()
    assert "用户名" in page
    switch_to_english(client, reverse("login"))
    assert "Username" in client.get(reverse("login"), HTTP_ACCEPT_LANGUAGE="zh-CN").content.decode()


def test_switching_back_restores_chinese(technologist_client, township):
    switch_to_english(technologist_client)
    technologist_client.post(reverse("set_language"), {"language": "zh-hans", "next": "/"})
    assert "本院检查" in technologist_client.get("/", follow=True).content.decode()


def test_the_login_page_switches_language_before_anyone_logs_in(client):
    assert "用户名" in client.get(reverse("login")).content.decode()
    switch_to_english(client, reverse("login"))
    page = client.get(reverse("login")).content.decode()
    assert "Username" in page
    assert "Log in" in page


def test_the_radiologists_worklist_and_the_dashboard_have_english_headings(radiologist_client, administrator_client):
    switch_to_english(radiologist_client)
    switch_to_english(administrator_client)
    assert "Worklist" in radiologist_client.get(reverse("consults:worklist")).content.decode()
    page = administrator_client.get(reverse("billing:dashboard")).content.decode()
    assert "Total saved (10,000 yuan)" in page
    assert "CT and DR exams per township and year." in page


def parse_po(path: Path) -> dict[str, list[str]]:
    """msgid -> its msgstr values (one, or one per plural form), fuzzy-free entries only.
    A msgid with a context is keyed as gettext keeps it: "context\x04msgid"."""
    entries: dict[str, list[str]] = {}
    context = ""
    msgid: list[str] = []
    strings: list[list[str]] = []
    current: list[str] | None = None

    def flush() -> None:
        if msgid and "".join(msgid):
            key = "".join(msgid)
            entries[f"{context}\x04{key}" if context else key] = ["".join(s) for s in strings]

    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("msgctxt "):
            flush()
            msgid, strings, current = [], [], None
            context = ast.literal_eval(line[8:])
        elif line.startswith("msgid "):
            if msgid:
                flush()
                context = ""
            msgid, strings = [ast.literal_eval(line[6:])], []
            current = msgid
        elif line.startswith("msgid_plural "):
            current = []
        elif line.startswith("msgstr"):
            current = [ast.literal_eval(line.split(" ", 1)[1])]
            strings.append(current)
        elif line.startswith('"') and current is not None:
            current.append(ast.literal_eval(line))
        elif line.startswith("#~"):
            current = None
    flush()
    return entries


def test_every_message_of_the_english_catalogue_is_translated():
    entries = parse_po(LOCALE / "django.po")
    assert len(entries) > 200
    untranslated = [msgid for msgid, msgstrs in entries.items() if not all(msgstrs)]
    assert untranslated == []


def test_the_compiled_catalogue_matches_the_po_file():
    with (LOCALE / "django.mo").open("rb") as mo:
        compiled = gettext.GNUTranslations(mo)
    entries = parse_po(LOCALE / "django.po")
    stale = [msgid for msgid, msgstrs in entries.items() if compiled.gettext(msgid) != msgstrs[0]]
    assert stale == []


def test_model_labels_and_choices_are_translated():
    with translation.override("en"):
        assert str(Consult._meta.verbose_name) == "Consult"
        assert str(Consult.Status.ARRIVED.label) == "Waiting"
    with translation.override("zh-hans"):
        assert str(Consult._meta.verbose_name) == "会诊"


def test_the_admins_sections_and_facilities_are_named_in_english(county, township):
    """The English admin headed its sections 机构与人员, 影像归档, 费用节省 and 远程会诊 (the
    apps' names were not marked for translation), and listed facilities by Chinese name only."""
    from facilities.models import User
    from tests.conftest import login
    from tests.factories import make_user

    administrator_client = login(make_user(User.Role.ADMINISTRATOR, county, username="admin_staff", is_staff=True))
    switch_to_english(administrator_client, reverse("admin:index"))
    index = administrator_client.get(reverse("admin:index")).content.decode()
    for english, chinese in [
        ("Facilities and people", "机构与人员"),
        ("Image archive", "影像归档"),
        ("Savings", "费用节省"),
        ("Teleradiology consults", "远程会诊"),
    ]:
        assert english in index and chinese not in index
    facilities = administrator_client.get(reverse("admin:facilities_facility_changelist")).content.decode()
    assert "Xuanwo Central Township Health Centre" in facilities


def test_the_overdue_count_reads_overdue_and_a_late_consult_overdue_by(administrator_client, township):
    """The open consults' figure and column read "Overdue by" (with no duration after it)."""
    from datetime import timedelta

    now = timezone.now()
    Consult.objects.create(
        facility=township,
        kind=ExamKind.CT,
        exam_date=date(2025, 9, 1),
        arrived_at=now - timedelta(hours=3),
        due_at=now - timedelta(hours=1),
    )
    switch_to_english(administrator_client)
    page = administrator_client.get(reverse("consults:open_consults")).content.decode()
    assert '<span class="label">Overdue</span>' in page
    assert '<span class="overdue">Overdue by 1' in page
