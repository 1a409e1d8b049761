"""Every URL pattern of the project, walked as each kind of visitor.

The table below names, for each route the resolver knows, the request to make and the
answer each visitor must get: anonymous, the technologist of the study's township, a
technologist of another township, a county radiologist, and an administrator. A route
that is not in the table fails the walk, so no page is added without saying who may
open it; a table row whose route is gone fails it too."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.contenttypes.models import ContentType
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone

from billing.models import LedgerEntry, PriceSchedule
from cloudpacs import orders
from consults import workflow
from consults.services import open_consult_for_study
from dicomnode.models import AssociationLog
from facilities.models import AuditEvent, ExamKind, RosterShift, User
from facilities.services import audit
from tests.dicomweb_support import ingest
from tests.factories import make_dataset, make_modality

PERSONAS = ("anonymous", "technologist", "outsider", "radiologist", "administrator")


def routes(
    patterns: list[Any] | None = None, prefix: str = "", chain: tuple[Any, ...] = ()
) -> Iterator[tuple[str, tuple[Any, ...]]]:
    """Every route as the text of its patterns joined, e.g. `reading/<uuid:consult_uuid>/`,
    with the pattern objects it is made of."""
    for pattern in get_resolver().url_patterns if patterns is None else patterns:
        if isinstance(pattern, URLResolver):
            yield from routes(pattern.url_patterns, prefix + str(pattern.pattern), (*chain, pattern.pattern))
        else:
            assert isinstance(pattern, URLPattern)
            yield prefix + str(pattern.pattern), (*chain, pattern.pattern)


def route_keys() -> Iterator[str]:
    return (key for key, _ in routes())


def parameters(chain: tuple[Any, ...]) -> dict[str, str]:
    """{parameter: what it accepts}: a path converter's class name, or a regex group's pattern."""
    found: dict[str, str] = {}
    for pattern in chain:
        for name, converter in getattr(pattern, "converters", {}).items():
            found[name] = type(converter).__name__
        found.update(re.findall(r"\(\?P<(\w+)>([^)]*)\)", str(pattern)))
    return found


# Answers. LOGIN is a redirect to a login page (the site's or the admin's); REDIRECT is any
# other redirect (a form post that goes back to its page, the home page sending a user on).
LOGIN = "login"
REDIRECT = "redirect"
OK, NO_CONTENT, UNAUTHORIZED, FORBIDDEN, NOT_FOUND, NOT_ALLOWED, CONFLICT = 200, 204, 401, 403, 404, 405, 409


@dataclass(frozen=True)
class Route:
    url: str
    answers: dict[str, int | str]
    method: str = "GET"


def expect(
    url: str,
    anonymous: Any,
    technologist: Any,
    outsider: Any,
    radiologist: Any,
    administrator: Any,
    *,
    method: str = "GET",
) -> Route:
    return Route(
        url, dict(zip(PERSONAS, (anonymous, technologist, outsider, radiologist, administrator), strict=True)), method
    )


def staff_only(url: str, answer: int | str = OK, *, method: str = "GET") -> Route:
    """A page of the Django admin: the administrator (staff) only; everyone else is sent to
    the admin's login, which is where Django sends a signed-in user who is not staff."""
    return expect(url, LOGIN, LOGIN, LOGIN, LOGIN, answer, method=method)


def clinical(url: str, *, technologist: Any = OK, radiologist: Any = OK, method: str = "GET") -> Route:
    """A page about one patient's study or consult: the township's technologist and the
    readers; another township gets 404 (it must not learn the study exists); the
    administrator 403 (a role that does not read)."""
    return expect(url, LOGIN, technologist, NOT_FOUND, radiologist, FORBIDDEN, method=method)


def dicomweb(url: str, *, outsider: Any = NOT_FOUND) -> Route:
    """DICOMweb is for programs: 401 with a challenge, not the login page."""
    return expect(url, UNAUTHORIZED, OK, outsider, OK, FORBIDDEN)


def model_admin(model: str, obj: str, *, read_only: bool = False, administrator: int = OK) -> dict[str, Route]:
    """The six routes of one registered model. Read-only records (the audit trail, the
    ledger) can be looked at but not added or deleted, even by the administrator."""
    base = f"admin/{model.replace('_', '/', 1)}/"
    editable = FORBIDDEN if read_only else administrator
    return {
        base: staff_only(f"/{base}", administrator),
        f"{base}add/": staff_only(f"/{base}add/", editable),
        f"{base}<path:object_id>/history/": staff_only(f"/{base}{obj}/history/", administrator),
        f"{base}<path:object_id>/delete/": staff_only(f"/{base}{obj}/delete/", editable),
        f"{base}<path:object_id>/change/": staff_only(f"/{base}{obj}/change/", administrator),
        # The bare object address only redirects to its change page, which then decides.
        f"{base}<path:object_id>/": staff_only(f"/{base}{obj}/", REDIRECT),
    }


ST = "{st}"
SE = f"{ST}/series/{{se}}"
SOP = f"{SE}/instances/{{sop}}"
DW = "dicomweb/studies/<uid:study_uid>"
DW_SE = f"{DW}/series/<uid:series_uid>"
DW_SOP = f"{DW_SE}/instances/<uid:sop_uid>"
DW_FR = f"{DW_SOP}/frames/<frames:frame_list>"
WADO = "/dicomweb/wado?requestType=WADO&studyUID={st}&seriesUID={se}&objectUID={sop}"

TABLE: dict[str, Route] = {
    # The Django admin: staff only.
    "admin/": staff_only("/admin/"),
    "admin/login/": expect("/admin/login/", OK, OK, OK, OK, REDIRECT),
    # Signing out of the admin goes back to the admin (which sends the visitor on to its login).
    "admin/logout/": expect("/admin/logout/", REDIRECT, REDIRECT, REDIRECT, REDIRECT, LOGIN, method="POST"),
    "admin/password_change/": staff_only("/admin/password_change/"),
    "admin/password_change/done/": staff_only("/admin/password_change/done/"),
    "admin/autocomplete/": staff_only("/admin/autocomplete/", FORBIDDEN),
    "admin/jsi18n/": staff_only("/admin/jsi18n/"),
    "admin/r/<path:content_type_id>/<path:object_id>/": staff_only("/admin/r/{facility_type}/{facility}/", NOT_FOUND),
    **model_admin("facilities_facility", "{facility}"),
    **model_admin("facilities_modality", "{modality}"),
    "admin/facilities/user/<id>/password/": staff_only("/admin/facilities/user/{user}/password/"),
    **model_admin("facilities_user", "{user}"),
    **model_admin("facilities_rostershift", "{shift}"),
    **model_admin("facilities_auditevent", "{event}", read_only=True),
    **model_admin("billing_priceschedule", "{schedule}"),
    **model_admin("billing_ledgerentry", "{ledger}", read_only=True),
    **model_admin("dicomnode_associationlog", "{association}", read_only=True),
    "admin/^(?P<app_label>facilities|billing|dicomnode)/$": staff_only("/admin/facilities/"),
    "admin/(?P<url>.*)$": staff_only("/admin/no-such-page/", NOT_FOUND),
    # DICOMweb (PS3.18).
    "dicomweb/studies": dicomweb("/dicomweb/studies", outsider=OK),
    "dicomweb/series": dicomweb("/dicomweb/series", outsider=OK),
    "dicomweb/instances": dicomweb("/dicomweb/instances", outsider=OK),
    "dicomweb/wado": dicomweb(WADO),
    DW: dicomweb(f"/dicomweb/studies/{ST}"),
    f"{DW}/metadata": dicomweb(f"/dicomweb/studies/{ST}/metadata"),
    f"{DW}/thumbnail": dicomweb(f"/dicomweb/studies/{ST}/thumbnail"),
    f"{DW}/series": dicomweb(f"/dicomweb/studies/{ST}/series"),
    f"{DW}/instances": dicomweb(f"/dicomweb/studies/{ST}/instances"),
    DW_SE: dicomweb(f"/dicomweb/studies/{SE}"),
    f"{DW_SE}/metadata": dicomweb(f"/dicomweb/studies/{SE}/metadata"),
    f"{DW_SE}/thumbnail": dicomweb(f"/dicomweb/studies/{SE}/thumbnail"),
    f"{DW_SE}/instances": dicomweb(f"/dicomweb/studies/{SE}/instances"),
    DW_SOP: dicomweb(f"/dicomweb/studies/{SOP}"),
    f"{DW_SOP}/metadata": dicomweb(f"/dicomweb/studies/{SOP}/metadata"),
    f"{DW_SOP}/rendered": dicomweb(f"/dicomweb/studies/{SOP}/rendered"),
    f"{DW_SOP}/thumbnail": dicomweb(f"/dicomweb/studies/{SOP}/thumbnail"),
    f"{DW_SOP}/bulkdata/<tag:tag>": dicomweb(f"/dicomweb/studies/{SOP}/bulkdata/7FE00010"),
    DW_FR: dicomweb(f"/dicomweb/studies/{SOP}/frames/1"),
    f"{DW_FR}/rendered": dicomweb(f"/dicomweb/studies/{SOP}/frames/1/rendered"),
    f"{DW_FR}/thumbnail": dicomweb(f"/dicomweb/studies/{SOP}/frames/1/thumbnail"),
    # The OpenAPI schema: any signed-in user or token; a program without one gets 401.
    "api/schema/": expect("/api/schema/", UNAUTHORIZED, OK, OK, OK, OK),
    # Signing in and out, the language.
    "i18n/setlang/": expect("/i18n/setlang/", *[REDIRECT] * 5, method="POST"),
    "accounts/login/": expect("/accounts/login/", OK, REDIRECT, REDIRECT, REDIRECT, REDIRECT),
    "accounts/logout/": expect("/accounts/logout/", *[LOGIN] * 5, method="POST"),
    "accounts/password/": expect("/accounts/password/", LOGIN, OK, OK, OK, OK),
    "accounts/password/done/": expect("/accounts/password/done/", LOGIN, OK, OK, OK, OK),
    # Pages.
    "": expect("/", LOGIN, REDIRECT, REDIRECT, REDIRECT, REDIRECT),
    "audit/": expect("/audit/", LOGIN, FORBIDDEN, FORBIDDEN, FORBIDDEN, OK),
    "status/": expect("/status/", LOGIN, FORBIDDEN, FORBIDDEN, FORBIDDEN, OK),
    "^studies/(?P<study_uid>[0-9.]{1,64})/$": clinical("/studies/{st}/"),
    "^viewer/(?P<study_uid>[0-9.]{1,64})/$": clinical("/viewer/{st}/"),
    "worklist/": expect("/worklist/", LOGIN, FORBIDDEN, FORBIDDEN, OK, FORBIDDEN),
    "facilities/<uuid:facility_uuid>/": clinical("/facilities/{township}/"),
    "consults/<uuid:consult_uuid>/": clinical("/consults/{consult}/"),
    # Asking for a consult of a stored study: the township's technologist only; this study
    # has one already, so the answer is a redirect to it.
    "^studies/(?P<study_uid>[0-9.]{1,64})/consult/$": expect(
        "/studies/{st}/consult/", LOGIN, REDIRECT, NOT_FOUND, FORBIDDEN, FORBIDDEN, method="POST"
    ),
    # Reading. The steps are posted against the signed consult: a step that the workflow
    # refuses goes back to the page with a message, which still shows the door was open.
    "reading/alerts/": expect("/reading/alerts/", LOGIN, OK, OK, OK, FORBIDDEN),
    "reading/templates/": expect("/reading/templates/", LOGIN, FORBIDDEN, FORBIDDEN, OK, FORBIDDEN),
    "reading/claim-next/": expect(
        "/reading/claim-next/", LOGIN, FORBIDDEN, FORBIDDEN, REDIRECT, FORBIDDEN, method="POST"
    ),
    "reading/critical/<uuid:finding_uuid>/acknowledge/": clinical(
        "/reading/critical/{finding}/acknowledge/", technologist=REDIRECT, radiologist=FORBIDDEN, method="POST"
    ),
    "reading/<uuid:consult_uuid>/": clinical("/reading/{consult}/"),
    **{
        f"reading/<uuid:consult_uuid>/{step}/": clinical(
            f"/reading/{{consult}}/{step}/", technologist=FORBIDDEN, radiologist=REDIRECT, method="POST"
        )
        for step in ("claim", "open", "release", "reassign", "report", "addendum", "critical")
    },
    # 已收到: the township's technologist says the signed report reached them.
    "reading/<uuid:consult_uuid>/receive/": clinical(
        "/reading/{consult}/receive/", technologist=REDIRECT, radiologist=FORBIDDEN, method="POST"
    ),
    # A correction of the request once the reading has begun is a conflict.
    "reading/<uuid:consult_uuid>/request/": expect(
        "/reading/{consult}/request/", LOGIN, CONFLICT, NOT_FOUND, FORBIDDEN, FORBIDDEN, method="POST"
    ),
    "reading/<uuid:consult_uuid>/delivery/retry/": clinical(
        "/reading/{consult}/delivery/retry/", technologist=REDIRECT, radiologist=REDIRECT, method="POST"
    ),
    "reading/<uuid:consult_uuid>/report.pdf": clinical("/reading/{consult}/report.pdf"),
    # Public: the page a printed report's QR code opens, for anyone holding its token.
    "^verify/(?P<token>[A-Za-z0-9_-]{16,64})/$": expect("/verify/{token}/", OK, OK, OK, OK, OK),
    # Dashboards and their exports: money for administrators and the township's own
    # technologist; turnaround and volume for every role.
    "dashboard/": expect("/dashboard/", LOGIN, FORBIDDEN, FORBIDDEN, FORBIDDEN, OK),
    "dashboards/savings/": expect("/dashboards/savings/", LOGIN, OK, OK, FORBIDDEN, OK),
    "dashboards/savings/<slug:table>.<slug:fmt>": expect(
        "/dashboards/savings/township.csv", LOGIN, OK, OK, FORBIDDEN, OK
    ),
    "dashboards/turnaround/": expect("/dashboards/turnaround/", LOGIN, OK, OK, OK, OK),
    "dashboards/turnaround/<slug:table>.<slug:fmt>": expect(
        "/dashboards/turnaround/township.csv", LOGIN, OK, OK, OK, OK
    ),
    "dashboards/volume/": expect("/dashboards/volume/", LOGIN, OK, OK, OK, OK),
    "dashboards/volume/<slug:kind>.<slug:fmt>": expect("/dashboards/volume/CT.csv", LOGIN, OK, OK, OK, OK),
    "dashboards/exams/": expect("/dashboards/exams/", LOGIN, OK, OK, OK, OK),
    # The township's register of exams: its own technologists; each township sees its own.
    "orders/": expect("/orders/", LOGIN, OK, OK, FORBIDDEN, FORBIDDEN),
    **{
        f"orders/<uuid:order_uuid>/{step}/": expect(
            f"/orders/{{order}}/{step}/", LOGIN, REDIRECT, NOT_FOUND, FORBIDDEN, FORBIDDEN, method="POST"
        )
        for step in ("cancel", "confirm", "reject")
    },
    # Its JSON API, for a HIS with a technologist's token (or session).
    "api/orders/": expect("/api/orders/", UNAUTHORIZED, OK, OK, FORBIDDEN, FORBIDDEN),
    "api/orders/<uuid:order_uuid>/": expect("/api/orders/{order}/", UNAUTHORIZED, OK, NOT_FOUND, FORBIDDEN, FORBIDDEN),
    # The walk has cancelled the order on the register page already: a conflict.
    "api/orders/<uuid:order_uuid>/cancel/": expect(
        "/api/orders/{order}/cancel/", UNAUTHORIZED, CONFLICT, NOT_FOUND, FORBIDDEN, FORBIDDEN, method="POST"
    ),
    "api/body-parts/": expect("/api/body-parts/", UNAUTHORIZED, OK, OK, OK, OK),
}


# Query strings that could widen what a page shows: each as its own row, with the same
# answers and the same check that another township sees none of this township's patient.
PROBES: list[Route] = [
    expect("/dashboards/savings/entries.csv", LOGIN, OK, OK, FORBIDDEN, OK),
    expect("/dashboards/exams/?township={township}", LOGIN, OK, NOT_FOUND, OK, OK),
    expect("/dashboards/exams/?basis=ledger", LOGIN, OK, OK, NOT_FOUND, OK),
    expect("/dashboards/turnaround/radiologist.csv?township={township}", LOGIN, OK, NOT_FOUND, OK, OK),
    expect("/reading/alerts/?fragment=1", LOGIN, OK, OK, OK, FORBIDDEN),
    expect("/worklist/?facility=XUANWO&status=signed", LOGIN, FORBIDDEN, FORBIDDEN, OK, FORBIDDEN),
    # The outsider's own study, with this township's study asked for as its prior.
    expect("/viewer/{outsider_st}/?prior={st}", LOGIN, NOT_FOUND, NOT_FOUND, NOT_FOUND, FORBIDDEN),
    # The outsider finds its own patient W0001, never this township's.
    expect("/dicomweb/studies?PatientID=W0001", UNAUTHORIZED, OK, OK, OK, FORBIDDEN),
    expect("/dicomweb/studies?StudyInstanceUID={st}", UNAUTHORIZED, OK, NO_CONTENT, OK, FORBIDDEN),
    expect("/dicomweb/instances?SOPInstanceUID={sop}", UNAUTHORIZED, OK, NO_CONTENT, OK, FORBIDDEN),
    expect("/audit/?object_id={consult}", LOGIN, FORBIDDEN, FORBIDDEN, FORBIDDEN, OK),
]


@dataclass
class World:
    users: dict[str, User]
    values: dict[str, str]
    # What identifies the township's patient and study: never on another township's page.
    secrets: list[str]


@pytest.fixture
def world(
    county, township, other_township, ct_modality, technologist, outsider, radiologist, administrator, tmp_path: Path
) -> World:
    administrator.is_staff = True
    administrator.save()
    # The township's archive has an address, so the signed report has a send-back to retry.
    ct_modality.host, ct_modality.port = "127.0.0.1", 104
    ct_modality.save()
    instance = ingest(
        make_dataset(patient_id="W0001", patient_name="Wang^Wu=王^五", character_set="ISO_IR 192"),
        ct_modality,
        tmp_path / "in",
    )
    study = instance.series.study
    study.refresh_from_db()
    # The outsider's township keeps a study of a patient with the same Patient ID.
    elsewhere = ingest(
        make_dataset(patient_id="W0001", patient_name="Li^Si"), make_modality(other_township), tmp_path / "out"
    )
    consult = open_consult_for_study(study)
    workflow.claim_consult(consult, radiologist)
    workflow.sign_final(consult, radiologist, "双肺纹理清晰。", "胸部 CT 平扫未见异常。")
    finding = workflow.flag_critical(consult, radiologist, "气胸")
    schedule = PriceSchedule.objects.create(code="shaanxi-2021", name="陕西 2021", effective_from=timezone.localdate())
    ledger = LedgerEntry.objects.first()
    if ledger is None:
        ledger = LedgerEntry.objects.create(
            consult=consult,
            facility=township,
            exam_kind=ExamKind.CT,
            exam_date=consult.exam_date,
            body_parts=1,
            schedule=schedule,
            county_price=180,
            township_price=150,
            saving=30,
        )
    shift = RosterShift.objects.create(
        radiologist=radiologist, starts_at=timezone.now(), ends_at=timezone.now() + timedelta(hours=8)
    )
    event = audit("consults.report.viewed", actor=radiologist, obj=consult)
    # An exam registered for the same patient, still on the worklist.
    order = orders.register_order(
        technologist,
        modality=ct_modality,
        patient_id="W0001",
        patient_name="王五",
        body_parts=orders.body_parts_for_kind(ExamKind.CT)[:1],
        scheduled_at=timezone.now(),
    )
    values = {
        "st": study.study_uid,
        "outsider_st": elsewhere.series.study.study_uid,
        "se": instance.series.series_uid,
        "sop": instance.sop_instance_uid,
        "consult": str(consult.uuid),
        "order": str(order.uuid),
        "accession": order.accession_number,
        "finding": str(finding.uuid),
        "token": consult.report.verification.token,
        "township": str(township.uuid),
        "facility": str(township.pk),
        "facility_type": str(ContentType.objects.get_for_model(township).pk),
        "modality": str(ct_modality.pk),
        "user": str(radiologist.pk),
        "shift": str(shift.pk),
        "event": str(event.pk),
        "schedule": str(schedule.pk),
        "ledger": str(ledger.pk),
        "association": str(
            AssociationLog.objects.create(
                calling_ae_title="XUANWO_CT", called_ae_title="CLOUDPACS", outcome=AssociationLog.Outcome.RELEASED
            ).pk
        ),
    }
    users = {
        "technologist": technologist,
        "outsider": outsider,
        "radiologist": radiologist,
        "administrator": administrator,
    }
    # Not the Patient ID: the outsider's own patient has the same one, as IDs collide
    # between hospitals.
    secrets = [
        study.study_uid,
        str(consult.uuid),
        str(finding.uuid),
        "王五",
        "王^五",
        "Wang Wu",
        "气胸",
        str(order.uuid),
        order.accession_number,
    ]
    return World(users, values, secrets)


def client_as(world: World, persona: str, **options: Any) -> Client:
    client = Client(**options)
    if persona != "anonymous":
        client.force_login(world.users[persona])
    return client


def answer_of(response: Any) -> int | str:
    if response.status_code in (301, 302):
        location = response["Location"]
        return LOGIN if re.match(r"^/(accounts|admin)/login/", location) else REDIRECT
    return response.status_code


def test_every_route_is_in_the_table_and_every_row_is_a_route():
    routes = list(route_keys())
    assert len(routes) == len(set(routes)), "two routes have the same pattern"
    assert sorted(set(routes) - set(TABLE)) == [], "routes nobody has said who may open"
    assert sorted(set(TABLE) - set(routes)) == [], "rows of the table that are no route"


# What a route outside the admin may take: UUIDs, DICOM UIDs (digits and dots) and their
# frame numbers and tags, and the names of export tables and formats.
# The report verification token is random (secrets.token_urlsafe), not a key.
OPAQUE = {
    "UUIDConverter",
    "UIDConverter",
    "FrameListConverter",
    "TagConverter",
    "SlugConverter",
    "[0-9.]{1,64}",
    "[A-Za-z0-9_-]{16,64}",
}
SLUG_PARAMETERS = {"table", "fmt", "kind"}


def test_no_route_outside_the_admin_takes_a_sequential_key():
    """Studies, consults, reports and patients are addressed by UIDs and UUIDs only. The
    admin's integer keys are for configuration and logs, and only staff reach them."""
    wrong = {}
    for key, chain in routes():
        if key.startswith("admin/"):
            continue
        for name, accepts in parameters(chain).items():
            if accepts not in OPAQUE or (accepts == "SlugConverter" and name not in SLUG_PARAMETERS):
                wrong[key] = (name, accepts)
    assert wrong == {}


def test_no_clinical_record_is_in_the_admin():
    from django.contrib import admin

    clinical_apps = {"cloudpacs", "consults"}
    assert [m._meta.label for m in admin.site._registry if m._meta.app_label in clinical_apps] == []


@pytest.mark.parametrize("persona", PERSONAS)
def test_every_route_answers_each_visitor_as_the_table_says(world, persona):
    check(world, persona, [TABLE[key] for key in route_keys()])


@pytest.mark.parametrize("persona", PERSONAS)
def test_query_strings_do_not_widen_what_a_visitor_sees(world, persona):
    check(world, persona, PROBES)


def check(world: World, persona: str, table: list[Route]) -> None:
    wrong = []
    for route in table:
        url = route.url.format(**world.values)
        client = client_as(world, persona)
        response = client.post(url) if route.method == "POST" else client.get(url)
        got = answer_of(response)
        if got != route.answers[persona]:
            wrong.append(f"{route.method} {url}: expected {route.answers[persona]}, got {got}")
        elif persona == "outsider" and got == OK:
            # A page another township may open must not show this township's patient.
            body = b"".join(response) if response.streaming else response.content
            leaked = [name for name in world.secrets if name.encode() in body]
            if leaked:
                wrong.append(f"{route.method} {url}: shows another township's {leaked}")
    assert not wrong, "\n".join(wrong)


def test_the_leak_check_would_see_the_patient_on_the_townships_own_pages(world):
    client = client_as(world, "technologist")
    page = client.get("/facilities/{township}/".format(**world.values)).content.decode()
    assert [name for name in world.secrets if name in page] == [
        name
        for name in world.secrets
        # The name is shown as 王五, never with its PN separator; the register (/orders/)
        # shows the order, not the township's page.
        if name not in ("王^五", "Wang Wu", world.values["order"], world.values["accession"])
    ]
    page = client.get("/consults/{consult}/".format(**world.values)).content.decode()
    assert "W0001" in page


@pytest.mark.parametrize("persona", PERSONAS)
def test_a_post_without_a_csrf_token_is_refused_on_every_route(world, persona):
    """Each route is posted to with the visitor's session cookie and no token. Django's
    pages refuse with the CSRF failure before any view runs; DICOMweb, which is for
    programs and exempt from the middleware, refuses a write by a session without the
    token itself, and every other method there with 405. The API schema (a DRF view, for
    programs too) answers 401 without credentials and DRF's CSRF failure to a session."""
    client = client_as(world, persona, enforce_csrf_checks=True)
    events = AuditEvent.objects.count()
    wrong = []
    for key in route_keys():
        url = TABLE[key].url.format(**world.values)
        response = client.post(url, {"findings": "x", "impression": "y", "text": "z", "description": "w"})
        if key.startswith(("dicomweb/", "api/")):
            if response.status_code not in (UNAUTHORIZED, FORBIDDEN, NOT_ALLOWED):
                wrong.append(f"POST {url}: {response.status_code}")
        elif response.status_code != FORBIDDEN or b"CSRF" not in response.content:
            wrong.append(f"POST {url}: {response.status_code}")
    assert not wrong, "\n".join(wrong)
    assert AuditEvent.objects.count() == events


def test_a_session_write_to_dicomweb_without_the_token_is_refused_for_csrf(world):
    client = client_as(world, "technologist", enforce_csrf_checks=True)
    response = client.post(
        "/dicomweb/studies", b"--b--\r\n", content_type='multipart/related; type="application/dicom"; boundary=b'
    )
    assert response.status_code == FORBIDDEN
    assert b"CSRF" in response.content


def test_every_post_form_in_the_templates_carries_the_csrf_token():
    """The server refuses a post without the token (above); this checks our own forms send it."""
    from django.conf import settings

    missing = []
    for path in sorted(Path(settings.BASE_DIR, "templates").rglob("*.html")):
        text = path.read_text()
        for form in re.finditer(r"<form\b[^>]*>(.*?)</form>", text, flags=re.S | re.I):
            if re.search(r"method=[\"']post[\"']", form.group(0), flags=re.I) and "{% csrf_token %}" not in form.group(
                1
            ):
                missing.append(f"{path.name}: {form.group(0)[:60]}")
    assert missing == []
