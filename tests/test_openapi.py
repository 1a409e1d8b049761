"""The OpenAPI schema at /api/schema/, and schemathesis fuzzing every operation it
describes against the application (in-process, through its WSGI handler) as a
radiologist and as a technologist: no request may be answered with a server error."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from django.test import Client
from django.urls import URLPattern
from drf_spectacular.validation import validate_schema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from cloudpacs.dicomweb import urls as dicomweb_urls
from cloudpacs.models import Order
from cloudpacs.openapi import dicomweb_paths
from cloudpacs.orders import body_parts_for_kind, register_order
from tests.dicomweb_support import Archive, token_for

SCHEMA_URL = "/api/schema/?format=json"


def fetch(client: Client, **headers: str) -> Any:
    return client.get(SCHEMA_URL, **{f"HTTP_{name.upper()}": value for name, value in headers.items()})


def test_the_schema_is_served_to_a_user_with_a_token_and_is_valid_openapi(db, radiologist):
    response = fetch(Client(), authorization=f"Token {token_for(radiologist)}")
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    validate_schema(schema)


def test_the_schema_is_served_to_a_signed_in_technologist(technologist_client):
    assert fetch(technologist_client).status_code == 200


def test_the_schema_is_refused_without_a_session_or_a_token(db):
    response = fetch(Client())
    assert response.status_code == 401
    assert "Token" in response["WWW-Authenticate"]
    assert fetch(Client(), authorization="Token not-a-token").status_code == 401


def test_the_schema_describes_every_dicomweb_route_with_its_parameters(db, radiologist):
    schema = fetch(Client(), authorization=f"Token {token_for(radiologist)}").json()
    described = {path for path in schema["paths"] if path.startswith("/dicomweb/")}
    assert len(described) == len(dicomweb_urls.urlpatterns)
    assert "/dicomweb/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/frames/{frame_list}" in described
    frames = schema["paths"][
        "/dicomweb/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/frames/{frame_list}"
    ]
    names = [parameter["name"] for parameter in frames["get"]["parameters"]]
    assert names == ["study_uid", "series_uid", "sop_uid", "frame_list"]
    assert set(schema["paths"]["/dicomweb/studies"]) == {"get", "post"}
    assert {"tokenAuth", "bearerAuth", "cookieAuth"} <= set(schema["components"]["securitySchemes"])


def test_a_dicomweb_route_without_a_description_stops_the_schema(monkeypatch):
    pattern = dicomweb_urls.urlpatterns[0]
    assert isinstance(pattern, URLPattern)
    unnamed = URLPattern(pattern.pattern, pattern.callback, name="a-route-nobody-described")
    monkeypatch.setattr(dicomweb_urls, "urlpatterns", [*dicomweb_urls.urlpatterns, unnamed])
    with pytest.raises(LookupError, match="a-route-nobody-described"):
        dicomweb_paths()


# --- schemathesis -------------------------------------------------------------------


@pytest.fixture
def tokens(archive: Archive, technologist, radiologist) -> dict[str, str]:
    return {"technologist": token_for(technologist), "radiologist": token_for(radiologist)}


@pytest.fixture
def order(technologist, ct_modality) -> Order:
    from datetime import datetime

    from django.utils import timezone

    return register_order(
        technologist,
        modality=ct_modality,
        patient_id="W0001",
        patient_name="王五",
        body_parts=body_parts_for_kind("CT")[:1],
        scheduled_at=timezone.make_aware(datetime(2025, 9, 1, 9, 0)),
    )


@pytest.fixture
def api_schema(archive: Archive, tokens: dict[str, str], order: Order) -> Iterator[Any]:
    """The schema as the application serves it, loaded through the application; half the
    cases name a study, series, instance and frame that exist, so the fuzzing goes past
    the 404s into QIDO, WADO, rendering and STOW themselves."""
    # The handler closes the database connection around each request, as a server must; the
    # test's connection (and its transaction) must stay open, as Django's test client keeps it.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    schema = schemathesis.openapi.from_wsgi(
        SCHEMA_URL, get_wsgi_application(), headers={"Authorization": f"Token {tokens['radiologist']}"}
    )
    existing = [
        {
            "study_uid": study,
            "series_uid": series,
            "sop_uid": sop,
            "frame_list": "1",
            "tag": "7FE00010",
            "order_uuid": str(order.uuid),
        }
        for study, series, instances in archive.studies.values()
        for sop in instances[:1]
    ]

    @schema.hook
    def flatmap_path_parameters(context: Any, path_parameters: dict[str, Any] | None) -> Any:
        if not path_parameters:
            return st.just(path_parameters)
        real = st.sampled_from(existing).map(lambda values: {name: values[name] for name in path_parameters})
        return st.one_of(st.just(path_parameters), real)

    try:
        yield schema
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


STOW_BOUNDARY = "yunying-fuzz"
STOW_CONTENT_TYPE = f'multipart/related; type="application/dicom"; boundary={STOW_BOUNDARY}'


@schemathesis.serializer("multipart/related")
def stow_body(context: Any, value: Any) -> bytes:
    """STOW-RS bodies: whatever was generated, as the one application/dicom part."""
    data = value if isinstance(value, bytes) else str(value).encode()
    head = f"--{STOW_BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    return head + data + f"\r\n--{STOW_BOUNDARY}--\r\n".encode()


FUZZING = settings(
    max_examples=6,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def server_errors(schema: Any, token: str) -> tuple[list[str], Counter[int]]:
    """Fuzz every operation, with data that fits the schema and data that does not: what
    was answered with a server error (schemathesis' reproduction of each), and the status
    codes seen."""
    failures: list[str] = []
    statuses: Counter[int] = Counter()
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @FUZZING
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case: Any) -> None:
                # Accept as every HTTP library sends it: without one, a GET is 406 (PS3.18 8.7.7).
                headers = {"Authorization": f"Token {token}", "Accept": "*/*"}
                if case.method == "POST" and case.path.startswith("/dicomweb/"):
                    headers["Content-Type"] = STOW_CONTENT_TYPE
                response = case.call_and_validate(headers=headers, checks=[not_a_server_error])
                statuses[response.status_code] += 1

            try:
                run()
            except Unsatisfiable:
                # Nothing that breaks the schema can be generated for this operation.
                continue
            except Exception as exc:
                details = [exc, *getattr(exc, "exceptions", [])]
                failures.append(f"{operation.label} ({mode.value}): " + "\n".join(map(str, details)))
    return failures, statuses


@pytest.mark.slow
def test_no_operation_answers_a_radiologist_with_a_server_error(api_schema, tokens):
    failures, statuses = server_errors(api_schema, tokens["radiologist"])
    assert not failures, "\n\n".join(failures)
    # The fuzzing went past authentication and into the archive.
    assert statuses[200] and statuses[404] and statuses[400]


@pytest.mark.slow
def test_no_operation_answers_a_technologist_with_a_server_error(api_schema, tokens):
    failures, statuses = server_errors(api_schema, tokens["technologist"])
    assert not failures, "\n\n".join(failures)
    assert statuses[200] and statuses[404] and statuses[400]


# --- What the fuzzing found ---------------------------------------------------------


def test_a_qido_offset_beyond_any_database_integer_is_an_empty_page_not_a_server_error(archive, tokens):
    client = Client(raise_request_exception=False, HTTP_ACCEPT="*/*")
    response = client.get(
        "/dicomweb/studies?offset=99999999999999999999", HTTP_AUTHORIZATION=f"Token {tokens['radiologist']}"
    )
    assert response.status_code == 204
