"""A NUL byte anywhere a request value can reach a query is a 400 from one middleware
(cloudpacs.middleware.RefuseNulMiddleware), never a 500: PostgreSQL's text types refuse NUL,
so on PostgreSQL each of these reached the driver and failed before the middleware."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from facilities.models import AuditEvent
from tests.factories import PASSWORD

NUL = "\x00"

QIDO_KEYS = ["PatientID", "PatientName", "AccessionNumber", "StudyInstanceUID", "ModalitiesInStudy", "StudyDate"]


def assert_refused(response) -> None:
    assert response.status_code == 400
    assert "NUL" in response.content.decode()


@pytest.mark.parametrize("key", QIDO_KEYS)
def test_a_nul_in_a_qido_key_is_a_400(radiologist_client, key):
    assert_refused(radiologist_client.get("/dicomweb/studies", {key: f"P{NUL}1"}))


def test_a_nul_in_a_qido_parameter_name_is_a_400(radiologist_client):
    assert_refused(radiologist_client.get("/dicomweb/studies", {f"Patient{NUL}ID": "P1"}))


def test_a_nul_in_the_series_and_instance_searches_is_a_400(radiologist_client):
    assert_refused(radiologist_client.get("/dicomweb/series", {"Modality": f"C{NUL}T"}))
    assert_refused(radiologist_client.get("/dicomweb/instances", {"SOPInstanceUID": f"1.2{NUL}"}))


@pytest.mark.parametrize("key", ["studyUID", "seriesUID", "objectUID", "contentType"])
def test_a_nul_in_a_wado_uri_parameter_is_a_400(radiologist_client, key):
    params = {
        "requestType": "WADO",
        "studyUID": "1.2.3",
        "seriesUID": "1.2.3.4",
        "objectUID": "1.2.3.4.5",
        "contentType": "image/jpeg",
    }
    params[key] += NUL
    assert_refused(radiologist_client.get("/dicomweb/wado", params))


def test_a_nul_in_the_worklist_filter_is_a_400(radiologist_client):
    assert_refused(radiologist_client.get(reverse("consults:worklist"), {"facility": NUL}))


def test_a_nul_in_the_audit_search_is_a_400(administrator_client):
    assert_refused(administrator_client.get(reverse("audit"), {"user": f"adm{NUL}in"}))


def test_a_nul_in_a_form_field_is_a_400_and_nothing_is_recorded(technologist, db):
    response = Client().post(reverse("login"), {"username": f"tech_xuanwo{NUL}", "password": PASSWORD})
    assert_refused(response)
    assert not AuditEvent.objects.exists()


def test_a_nul_in_a_multipart_form_field_is_a_400(technologist_client):
    response = technologist_client.post(
        reverse("password_change"),
        {"old_password": PASSWORD, "new_password1": f"a{NUL}b" * 6, "new_password2": f"a{NUL}b" * 6},
    )
    assert_refused(response)


def test_a_nul_in_the_session_cookie_is_a_400(db):
    client = Client()
    client.cookies["sessionid"] = f"abc{NUL}def"
    assert_refused(client.get(reverse("home")))


def test_a_nul_in_the_path_is_a_400(radiologist_client):
    assert_refused(radiologist_client.get("/dicomweb/studies/1.2.3%00/series"))


def test_other_control_characters_are_not_refused(radiologist_client):
    # Tab, newline and the rest are valid in PostgreSQL text: a search simply finds nothing.
    response = radiologist_client.get("/dicomweb/studies", {"PatientID": "P\t1\x1b"})
    assert response.status_code in {200, 204}


def test_the_refusal_comes_before_the_session_is_read(technologist_client):
    # A NUL in a query parameter refuses even a signed-in request; the session stays valid.
    assert_refused(technologist_client.get(reverse("home"), {"x": NUL}))
    assert technologist_client.get(reverse("home")).status_code == 302
