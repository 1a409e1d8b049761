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
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.contenttypes.models import ContentType
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone

from billing.models import LedgerEntry, MonthlyReport, PriceSchedule
from cloudpacs import orders
from cloudpacs.models import IngestConflict
from consults import workflow
from consults.models import Addendum, Consult, CriticalFinding, Phrase, Report, ReportDelivery, ReportTemplate
from consults.rules import Step, refusal
from consults.services import open_consult_for_study
from dicomnode.models import AssociationLog
from facilities.models import ApiToken, AuditEvent, ExamKind, RosterShift, User
from facilities.services import audit
from tests.dicomweb_support import ingest
from tests.factories import (
    make_administrator,
    make_county,
    make_ct_modality,
    make_dataset,
    make_modality,
    make_other_township,
    make_outsider,
    make_radiologist,
    make_technologist,
    make_township,
)

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
OK, NO_CONTENT, BAD_REQUEST, UNAUTHORIZED, FORBIDDEN, NOT_FOUND, NOT_ALLOWED, CONFLICT = (
    200,
    204,
    400,
    401,
    403,
    404,
    405,
    409,
)


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
    **model_admin("facilities_applicationentity", "{entity}"),
    "admin/facilities/user/<id>/password/": staff_only("/admin/facilities/user/{user}/password/"),
    **model_admin("facilities_user", "{user}"),
    **model_admin("facilities_rostershift", "{shift}"),
    **model_admin("facilities_auditevent", "{event}", read_only=True),
    **model_admin("billing_priceschedule", "{schedule}"),
    **model_admin("billing_ledgerentry", "{ledger}", read_only=True),
    **model_admin("dicomnode_associationlog", "{association}", read_only=True),
    **model_admin("cloudpacs_ingestconflict", "{conflict}", read_only=True),
    **model_admin("consults_reporttemplate", "{template}"),
    **model_admin("consults_phrase", "{phrase}"),
    "admin/^(?P<app_label>facilities|cloudpacs|consults|billing|dicomnode)/$": staff_only("/admin/facilities/"),
    "admin/(?P<url>.*)$": staff_only("/admin/no-such-page/", NOT_FOUND),
    # DICOMweb (PS3.18).
    "dicomweb/studies": dicomweb("/dicomweb/studies", outsider=OK),
    "dicomweb/series": dicomweb("/dicomweb/series", outsider=OK),
    "dicomweb/instances": dicomweb("/dicomweb/instances", outsider=OK),
    "dicomweb/wado": dicomweb(WADO),
    DW: dicomweb(f"/dicomweb/studies/{ST}"),
    f"{DW}/metadata": dicomweb(f"/dicomweb/studies/{ST}/metadata"),
    f"{DW}/rendered": dicomweb(f"/dicomweb/studies/{ST}/rendered"),
    f"{DW}/thumbnail": dicomweb(f"/dicomweb/studies/{ST}/thumbnail"),
    f"{DW}/series": dicomweb(f"/dicomweb/studies/{ST}/series"),
    f"{DW}/instances": dicomweb(f"/dicomweb/studies/{ST}/instances"),
    DW_SE: dicomweb(f"/dicomweb/studies/{SE}"),
    f"{DW_SE}/metadata": dicomweb(f"/dicomweb/studies/{SE}/metadata"),
    f"{DW_SE}/rendered": dicomweb(f"/dicomweb/studies/{SE}/rendered"),
    f"{DW_SE}/thumbnail": dicomweb(f"/dicomweb/studies/{SE}/thumbnail"),
    f"{DW_SE}/instances": dicomweb(f"/dicomweb/studies/{SE}/instances"),
    f"{DW_SE}/frames": dicomweb(f"/dicomweb/studies/{SE}/frames?instances={{sop}}"),
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
    "accounts/tokens/": expect("/accounts/tokens/", LOGIN, OK, OK, OK, OK),
    # The radiologist's own token: only its owner may revoke it.
    "accounts/tokens/<uuid:token_uuid>/revoke/": expect(
        "/accounts/tokens/{api_token}/revoke/", LOGIN, NOT_FOUND, NOT_FOUND, REDIRECT, NOT_FOUND, method="POST"
    ),
    # Pages.
    "": expect("/", LOGIN, REDIRECT, REDIRECT, REDIRECT, REDIRECT),
    "audit/": expect("/audit/", LOGIN, FORBIDDEN, FORBIDDEN, FORBIDDEN, OK),
    "status/": expect("/status/", LOGIN, FORBIDDEN, FORBIDDEN, FORBIDDEN, OK),
    # The administrators' open consults; a bulk reassignment with nothing ticked comes back
    # to the page with the form's message.
    "consults/open/": expect("/consults/open/", LOGIN, FORBIDDEN, FORBIDDEN, FORBIDDEN, OK),
    "consults/open/reassign/": expect(
        "/consults/open/reassign/", LOGIN, FORBIDDEN, FORBIDDEN, FORBIDDEN, REDIRECT, method="POST"
    ),
    "^studies/(?P<study_uid>[0-9.]{1,64})/$": clinical("/studies/{st}/"),
    "^viewer/(?P<study_uid>[0-9.]{1,64})/$": clinical("/viewer/{st}/"),
    # The study's key images and measurements: read by whoever may open the study; kept
    # by its readers only (nothing posted: the form's 400).
    "^viewer/(?P<study_uid>[0-9.]{1,64})/marks/$": clinical("/viewer/{st}/marks/"),
    "^viewer/(?P<study_uid>[0-9.]{1,64})/marks/save/$": expect(
        "/viewer/{st}/marks/save/", LOGIN, FORBIDDEN, FORBIDDEN, BAD_REQUEST, FORBIDDEN, method="POST"
    ),
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
    "reading/phrases/": expect("/reading/phrases/", LOGIN, FORBIDDEN, FORBIDDEN, OK, FORBIDDEN),
    # No phrase posted: a radiologist's form comes back as not found, like another's phrase.
    "reading/phrases/delete/": expect(
        "/reading/phrases/delete/", LOGIN, FORBIDDEN, FORBIDDEN, NOT_FOUND, FORBIDDEN, method="POST"
    ),
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
        for step in ("claim", "open", "release", "reassign", "report")
    },
    # Posted empty, an addendum or a critical finding says nothing: the page again, its
    # field's error beside it.
    **{
        f"reading/<uuid:consult_uuid>/{step}/": clinical(
            f"/reading/{{consult}}/{step}/", technologist=FORBIDDEN, radiologist=BAD_REQUEST, method="POST"
        )
        for step in ("addendum", "critical")
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
    # The patients' savings: as the savings page.
    "dashboards/travel/": expect("/dashboards/travel/", LOGIN, OK, OK, FORBIDDEN, OK),
    # The administrators' reports: growth, each reader's workload, the time limits.
    "dashboards/growth/": expect("/dashboards/growth/", LOGIN, FORBIDDEN, FORBIDDEN, FORBIDDEN, OK),
    "dashboards/growth/<slug:table>.<slug:fmt>": expect(
        "/dashboards/growth/exams-year.csv", LOGIN, FORBIDDEN, FORBIDDEN, FORBIDDEN, OK
    ),
    "dashboards/workload/": expect("/dashboards/workload/", LOGIN, FORBIDDEN, FORBIDDEN, FORBIDDEN, OK),
    "dashboards/workload/<slug:table>.<slug:fmt>": expect(
        "/dashboards/workload/radiologists.csv", LOGIN, FORBIDDEN, FORBIDDEN, FORBIDDEN, OK
    ),
    "dashboards/timeliness/": expect("/dashboards/timeliness/", LOGIN, FORBIDDEN, FORBIDDEN, FORBIDDEN, OK),
    "dashboards/timeliness/<slug:table>.<slug:fmt>": expect(
        "/dashboards/timeliness/priority-kind.csv", LOGIN, FORBIDDEN, FORBIDDEN, FORBIDDEN, OK
    ),
    # The monthly report: the county's, administrators only.
    "dashboards/monthly/": expect("/dashboards/monthly/", LOGIN, FORBIDDEN, FORBIDDEN, FORBIDDEN, OK),
    "dashboards/monthly/<uuid:report_uuid>.pdf": expect(
        "/dashboards/monthly/{monthly_report}.pdf", LOGIN, FORBIDDEN, FORBIDDEN, FORBIDDEN, OK
    ),
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


@pytest.fixture(scope="module")
def walk_world(module_transaction) -> World:
    """The world is built once for the module (conftest's `module_transaction`): the walks
    only read it, and what a test writes is undone after it."""
    with module_transaction.building():
        county, township, other_township = make_county(), make_township(), make_other_township()
        ct_modality = make_ct_modality(township)
        return build_world(
            township,
            other_township,
            ct_modality,
            make_technologist(township),
            make_outsider(other_township),
            make_radiologist(county),
            make_administrator(county),
            module_transaction.directory,
        )


@pytest.fixture
def world(walk_world: World, db) -> World:
    return walk_world


def build_world(
    township, other_township, ct_modality, technologist, outsider, radiologist, administrator, directory: Path
) -> World:
    administrator.is_staff = True
    administrator.save()
    # The township's archive has an address, so the signed report has a send-back to retry.
    ct_modality.host, ct_modality.port = "127.0.0.1", 104
    ct_modality.save()
    instance = ingest(
        make_dataset(patient_id="W0001", patient_name="Wang^Wu=王^五", character_set="ISO_IR 192"),
        ct_modality,
        directory / "in",
    )
    study = instance.series.study
    study.refresh_from_db()
    # The outsider's township keeps a study of a patient with the same Patient ID.
    elsewhere = ingest(
        make_dataset(patient_id="W0001", patient_name="Li^Si"), make_modality(other_township), directory / "out"
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
        "entity": str(ct_modality.application_entity.pk),
        "user": str(radiologist.pk),
        "shift": str(shift.pk),
        "event": str(event.pk),
        "schedule": str(schedule.pk),
        "monthly_report": str(
            MonthlyReport.objects.create(
                month=date(2025, 8, 1), trigger="demand", language="zh-hans", pdf=b"%PDF", size=4, sha256="0" * 64
            ).uuid
        ),
        "ledger": str(ledger.pk),
        "api_token": str(ApiToken.objects.create(radiologist, name="walk")[0].uuid),
        "association": str(
            AssociationLog.objects.create(
                calling_ae_title="XUANWO_CT", called_ae_title="CLOUDPACS", outcome=AssociationLog.Outcome.RELEASED
            ).pk
        ),
        "template": str(ReportTemplate.objects.create(kind="CT", body_part="头颅", name="walk", impression="-").pk),
        "phrase": str(Phrase.objects.create(text="walk").pk),
        "conflict": str(
            IngestConflict.objects.create(
                at=timezone.now(),
                reason=IngestConflict.Reason.STUDY_OF_ANOTHER_FACILITY,
                channel=IngestConflict.Channel.DIMSE,
                facility=other_township,
                ae_title="PINGLIANG_CT",
                sop_instance_uid="1.2.3.4",
                study_uid="1.2.3",
                series_uid="1.2.3.5",
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
    client = Client(HTTP_ACCEPT="*/*", **options)
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
    """The archive's only admin is the read-only log of refused instances (ingest
    conflicts): UIDs and the Patient ID received, no name, nothing that can be edited."""
    from django.contrib import admin

    clinical_apps = {"cloudpacs", "consults"}
    listed = [m._meta.label for m in admin.site._registry if m._meta.app_label in clinical_apps]
    # The department's report templates and phrases are wording, not records of a patient.
    assert sorted(listed) == ["cloudpacs.IngestConflict", "consults.Phrase", "consults.ReportTemplate"]


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


# --- A GET never changes anything -------------------------------------------------------------

# The apps whose rows are the platform's state (Django's sessions are left out).
STATE_APPS = ("facilities", "cloudpacs", "consults", "billing", "dicomnode")
# GETs of patient data are audited (who looked at what): those entries, named for a look
# (or for a look refused: DICOMweb records a route naming another township's study), are
# the one write a GET may make. Every other audit entry records a change, and no GET may
# write one.
VIEW_AUDIT = r"\.(viewed|printed|retrieved|downloaded|verified|access_refused)$"  # a look: a page, a PDF, an export


def is_view_audit(action: str) -> bool:
    return re.search(VIEW_AUDIT, action) is not None


# Not state: how a visitor is recognised (the login throttle's counters), and a cache of
# what an immutable file says (an instance's WADO-RS metadata, computed on its first
# request when the stability sweep has not stored it yet; computing it again gives the
# same text).
NOT_STATE = {"facilities.LoginThrottle", "cloudpacs.InstanceMetadata"}


def snapshot() -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the platform's own tables, but the audit trail's view entries, the
    users' last login, and NOT_STATE."""
    from django.apps import apps

    tables: dict[str, list[tuple[Any, ...]]] = {}
    for model in apps.get_models():
        if model._meta.app_label not in STATE_APPS or model._meta.label in NOT_STATE:
            continue
        rows = model.objects.order_by("pk")
        if model is AuditEvent:
            rows = rows.exclude(action__regex=VIEW_AUDIT)
        fields = [f.attname for f in model._meta.concrete_fields if f.attname != "last_login"]
        tables[model._meta.label] = [
            tuple(bytes(v) if isinstance(v, memoryview) else v for v in row) for row in rows.values_list(*fields)
        ]
    return tables


def changed_tables(before: dict[str, list[tuple[Any, ...]]], after: dict[str, list[tuple[Any, ...]]]) -> list[str]:
    return sorted(label for label in before if before[label] != after[label])


@pytest.mark.parametrize("persona", PERSONAS)
def test_a_get_of_every_page_changes_nothing(world, persona):
    """Every GET route of the walk and every probe, as each visitor: the state tables are
    the same afterwards, row for row. A page view is audited where it shows patient data;
    that is the only row a GET may add."""
    client = client_as(world, persona)
    gets = [route for route in [TABLE[key] for key in route_keys()] + PROBES if route.method == "GET"]
    assert len(gets) > 60
    before = snapshot()
    events = AuditEvent.objects.count()
    answers = set()
    for route in gets:
        response = client.get(route.url.format(**world.values))
        answers.add(answer_of(response))
        if response.streaming:
            b"".join(response)
    new_events = AuditEvent.objects.order_by("-pk")[: AuditEvent.objects.count() - events]
    added = set(new_events.values_list("action", flat=True))
    assert {action for action in added if not is_view_audit(action)} == set()
    assert changed_tables(before, snapshot()) == []
    if persona in ("technologist", "radiologist"):
        assert OK in answers and "consults.report.viewed" in added  # the walk did reach the pages


def test_the_snapshot_sees_a_change_of_clinical_state(world):
    before = snapshot()
    consult = Consult.objects.get(uuid=world.values["consult"])
    workflow.confirm_receipt(consult, world.users["technologist"])
    # The change feed row (consults.ConsultChange) is written in the step's transaction too.
    assert changed_tables(before, snapshot()) == ["consults.Consult", "consults.ConsultChange", "facilities.AuditEvent"]


# --- The POST side: every step on a consult, as each persona, against the one rule ---------

# Each step's route (and what it posts) and what on the reading page offers it.
STEPS: dict[Step, tuple[str, dict[str, str], str]] = {
    Step.CLAIM: ("/reading/{consult}/claim/", {}, "/reading/{consult}/claim/"),
    Step.OPEN: ("/reading/{consult}/open/", {}, "/reading/{consult}/open/"),
    Step.RELEASE: ("/reading/{consult}/release/", {}, "/reading/{consult}/release/"),
    Step.REASSIGN: ("/reading/{consult}/reassign/", {"to": ""}, "/reading/{consult}/reassign/"),
    Step.EDIT: (
        "/reading/{consult}/report/",
        {"findings": "所见", "impression": "意见", "action": "save"},
        'value="save"',
    ),
    Step.PRELIMINARY: (
        "/reading/{consult}/report/",
        {"findings": "所见", "impression": "初诊意见", "action": "preliminary"},
        'value="preliminary"',
    ),
    Step.SIGN: (
        "/reading/{consult}/report/",
        {"findings": "所见", "impression": "意见", "action": "sign"},
        'value="sign"',
    ),
    Step.ADDENDUM: ("/reading/{consult}/addendum/", {"text": "补充"}, "/reading/{consult}/addendum/"),
    Step.FLAG_CRITICAL: ("/reading/{consult}/critical/", {"description": "气胸"}, "/reading/{consult}/critical/"),
    Step.ACKNOWLEDGE: (
        "/reading/critical/{finding}/acknowledge/",
        {},
        "/reading/critical/{finding}/acknowledge/",
    ),
    Step.CORRECT_REQUEST: ("/reading/{consult}/request/", {"question": "改正的问题"}, "/reading/{consult}/request/"),
    Step.RETRY_DELIVERY: ("/reading/{consult}/delivery/retry/", {}, "/reading/{consult}/delivery/retry/"),
    Step.RECEIVE: ("/reading/{consult}/receive/", {}, "/reading/{consult}/receive/"),
}
STEP_PERSONAS = ("technologist", "outsider", "township_admin", "administrator", "senior", "junior", "dr_only")
SCENARIOS = ("arrived", "assigned", "opened", "preliminary", "signed_send_back_failed", "delivered")


@pytest.fixture
def step_world(county, township, other_township, ct_modality, technologist, outsider, radiologist, administrator):
    """A consult in each state of the reading, each with a critical finding the township
    has not yet acknowledged, and the people who might act on them."""
    from tests.factories import make_consult, make_shift, make_study, make_user

    ct_modality.host, ct_modality.port = "127.0.0.1", 104
    ct_modality.save()
    users = {
        "technologist": technologist,
        "outsider": outsider,
        # An administrator who belongs to the township: not the one who acknowledges.
        "township_admin": make_user(User.Role.ADMINISTRATOR, township, username="admin_xuanwo"),
        "administrator": administrator,
        "senior": radiologist,  # 李医生, a senior: may review and reassign
        "junior": make_user(User.Role.RADIOLOGIST, county, username="dr_wang", display_name="王医生"),
        "dr_only": make_user(User.Role.RADIOLOGIST, county, username="dr_zhou", reads_ct=False),
    }
    # The township's reports need a senior's review: every signature step is in play.
    township.requires_second_signature = True
    township.save()
    now = timezone.now()
    for reader in ("senior", "junior", "dr_only"):
        make_shift(users[reader], now - timedelta(hours=1))
    junior = users["junior"]

    def consult(**fields: Any) -> Consult:
        return make_consult(
            township, make_study(township, ct_modality), arrived_at=now - timedelta(minutes=5), **fields
        )

    consults: dict[str, Consult] = {}
    consults["arrived"] = consult()
    consults["assigned"] = consult()
    workflow.assign_consult(consults["assigned"], now)  # the roster gives it to the least loaded
    consults["assigned"].refresh_from_db()
    if consults["assigned"].radiologist != junior:
        workflow.reassign_consult(consults["assigned"], to=junior, now=now)
    consults["opened"] = consult()
    workflow.claim_consult(consults["opened"], junior)
    workflow.save_draft(consults["opened"], junior, "草稿", "")
    consults["preliminary"] = consult()
    workflow.claim_consult(consults["preliminary"], junior)
    workflow.sign_preliminary(consults["preliminary"], junior, "所见", "初诊意见")
    for name in ("signed_send_back_failed", "delivered"):
        consults[name] = consult()
        workflow.claim_consult(consults[name], junior)
        workflow.sign_preliminary(consults[name], junior, "所见", "初诊意见")
        workflow.sign_final(consults[name], users["senior"], "所见", "审核意见")
    ReportDelivery.objects.filter(consult=consults["signed_send_back_failed"]).update(
        status=ReportDelivery.Status.FAILED, last_error="refused"
    )
    workflow.confirm_receipt(consults["delivered"], technologist)
    findings = {
        name: CriticalFinding.objects.create(consult=c, description="气胸", flagged_by=radiologist, flagged_at=now)
        for name, c in consults.items()
    }
    for c in consults.values():
        c.refresh_from_db()
    return users, consults, findings


# The rule, written out: what each persona may do to a consult in each state (the
# township's reports need a senior's review; 王医生, a junior, is the reader throughout).
EXPECTED: dict[str, dict[str, set[Step]]] = {
    "arrived": {
        "technologist": {Step.ACKNOWLEDGE, Step.CORRECT_REQUEST},
        "senior": {Step.CLAIM, Step.REASSIGN, Step.FLAG_CRITICAL},
        "junior": {Step.CLAIM, Step.FLAG_CRITICAL},
    },
    "assigned": {
        "technologist": {Step.ACKNOWLEDGE, Step.CORRECT_REQUEST},
        "senior": {Step.REASSIGN},
        "junior": {Step.OPEN, Step.RELEASE, Step.EDIT, Step.PRELIMINARY, Step.FLAG_CRITICAL},
    },
    "opened": {
        "technologist": {Step.ACKNOWLEDGE},
        "senior": {Step.REASSIGN},
        "junior": {Step.RELEASE, Step.EDIT, Step.PRELIMINARY, Step.FLAG_CRITICAL},
    },
    "preliminary": {
        "technologist": {Step.ACKNOWLEDGE},
        "senior": {Step.EDIT, Step.SIGN, Step.FLAG_CRITICAL},
        "junior": {Step.FLAG_CRITICAL},
    },
    "signed_send_back_failed": {
        "technologist": {Step.ACKNOWLEDGE, Step.RETRY_DELIVERY, Step.RECEIVE},
        "senior": {Step.ADDENDUM, Step.FLAG_CRITICAL, Step.RETRY_DELIVERY},
        "junior": {Step.ADDENDUM, Step.FLAG_CRITICAL, Step.RETRY_DELIVERY},
        "dr_only": {Step.RETRY_DELIVERY},
    },
    "delivered": {
        "technologist": {Step.ACKNOWLEDGE},
        "senior": {Step.ADDENDUM, Step.FLAG_CRITICAL},
        "junior": {Step.ADDENDUM, Step.FLAG_CRITICAL},
    },
}


def clinical_state(consult: Consult) -> tuple[Any, ...]:
    """What any step changes: the consult's row, its report and addenda, its critical
    findings, its send-back, and the audit entries of changes."""
    return (
        tuple(Consult.objects.filter(pk=consult.pk).values_list()),
        tuple(Report.objects.filter(consult=consult).values_list()),
        tuple(Addendum.objects.filter(report__consult=consult).values_list()),
        tuple(CriticalFinding.objects.filter(consult=consult).values_list()),
        tuple(ReportDelivery.objects.filter(consult=consult).values_list()),
        AuditEvent.objects.exclude(action__regex=VIEW_AUDIT).count(),
    )


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_each_step_is_offered_and_accepted_exactly_as_the_rule_says(step_world, scenario):
    """For each persona on a consult in this state: the reading page offers a step if and
    only if workflow.allowed_steps has it, and its POST changes the consult if and only if
    so. A refusal answers as its kind says: 404 outside the user's scope, 403 for who the
    user is (NotAllowed), 409 for a request already being read, else back to the page with
    the message, and changes nothing."""
    from django.db import transaction

    users, consults, findings = step_world
    consult = consults[scenario]
    values = {"consult": str(consult.uuid), "finding": str(findings[scenario].uuid)}
    wrong = []
    for persona in STEP_PERSONAS:
        user = users[persona]
        client = Client()
        client.force_login(user)
        consult.refresh_from_db()
        allowed = workflow.allowed_steps(user, consult)
        if set(allowed) != EXPECTED[scenario].get(persona, set()):
            wrong.append(
                f"{persona}: allowed {sorted(allowed)}, the rule says {sorted(EXPECTED[scenario].get(persona, set()))}"
            )
        in_scope = persona not in ("outsider",)
        page = client.get(f"/reading/{consult.uuid}/")
        offered = set()
        if page.status_code == OK:
            body = page.content.decode()
            offered = {step for step, (_u, _d, marker) in STEPS.items() if marker.format(**values) in body}
        if offered != set(allowed):
            wrong.append(f"{persona}: offered {sorted(offered)}, allowed {sorted(allowed)}")
        for step, (url, data, _marker) in STEPS.items():
            before = clinical_state(consult)
            with transaction.atomic():
                response = client.post(url.format(**values), data)
                changed = clinical_state(consult) != before
                transaction.set_rollback(True)
            consult.refresh_from_db()
            refused = refusal(step, user, consult)
            if page.status_code == FORBIDDEN or user.is_administrator:
                expected: Any = FORBIDDEN  # a role that does not read: no consult page at all
            elif not in_scope:
                expected = NOT_FOUND
            elif step in allowed:
                expected = REDIRECT
            elif isinstance(refused, workflow.RequestLocked):
                expected = CONFLICT
            elif isinstance(refused, workflow.NotAllowed) or (
                step == Step.CORRECT_REQUEST and not user.is_technologist
            ):
                expected = FORBIDDEN
            else:
                expected = REDIRECT  # back to the page, with the rule's message
            got = answer_of(response)
            if got != expected or changed != (step in allowed):
                wrong.append(f"{persona} {step}: answered {got} (expected {expected}), changed {changed}")
    assert not wrong, f"{scenario}:\n" + "\n".join(wrong)


def test_the_township_print_button_delivers_once_and_nothing_else_does(step_world):
    """The PDF's POST is a step too (the first print by the township is its receipt); its
    GET, and a POST by anyone else, serve the PDF and change nothing."""
    users, consults, _findings = step_world
    consult = consults["signed_send_back_failed"]
    url = f"/reading/{consult.uuid}/report.pdf"
    for persona in ("senior", "junior", "technologist"):
        client = Client()
        client.force_login(users[persona])
        before = clinical_state(consult)
        assert client.get(url)["Content-Type"] == "application/pdf"
        if persona != "technologist":
            assert client.post(url)["Content-Type"] == "application/pdf"
        assert clinical_state(consult) == before
    client = Client()
    client.force_login(users["technologist"])
    assert client.post(url)["Content-Type"] == "application/pdf"
    consult.refresh_from_db()
    assert consult.status == Consult.Status.DELIVERED
    once = clinical_state(consult)
    assert client.post(url)["Content-Type"] == "application/pdf"
    assert clinical_state(consult) == once
    outsider = Client()
    outsider.force_login(users["outsider"])
    assert outsider.post(url).status_code == NOT_FOUND
