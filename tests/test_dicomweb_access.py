"""Who may call which DICOMweb route: every route for a technologist of the township, a
technologist of another township (404: the study is not theirs to know of), a county
radiologist, an administrator (403) and an anonymous caller (401 with a challenge);
tokens under both schemes; CORS for a configured viewer origin."""

from __future__ import annotations

from django.test import Client

from facilities.models import AuditEvent
from tests.dicomweb_support import Archive, token_for

STUDY_ROUTES = [
    "/studies/{st}",
    "/studies/{st}/metadata",
    "/studies/{st}/rendered",
    "/studies/{st}/thumbnail",
    "/studies/{st}/series",
    "/studies/{st}/instances",
    "/studies/{st}/series/{se}",
    "/studies/{st}/series/{se}/metadata",
    "/studies/{st}/series/{se}/rendered",
    "/studies/{st}/series/{se}/thumbnail",
    "/studies/{st}/series/{se}/instances",
    "/studies/{st}/series/{se}/instances/{sop}",
    "/studies/{st}/series/{se}/instances/{sop}/metadata",
    "/studies/{st}/series/{se}/instances/{sop}/rendered",
    "/studies/{st}/series/{se}/instances/{sop}/thumbnail",
    "/studies/{st}/series/{se}/instances/{sop}/bulkdata/7FE00010",
    "/studies/{st}/series/{se}/instances/{sop}/frames/1",
    "/studies/{st}/series/{se}/frames?instances={sop}",
    "/studies/{st}/series/{se}/instances/{sop}/frames/1/rendered",
    "/studies/{st}/series/{se}/instances/{sop}/frames/1/thumbnail",
    "/wado?requestType=WADO&studyUID={st}&seriesUID={se}&objectUID={sop}",
    "/wado?requestType=WADO&studyUID={st}&seriesUID={se}&objectUID={sop}&contentType=application/dicom",
]
SEARCH_ROUTES = ["/studies", "/series", "/instances"]


def routes(archive: Archive) -> list[str]:
    st, se, sop = archive.uids("zhang_ct")
    return ["/dicomweb" + route.format(st=st, se=se, sop=sop) for route in STUDY_ROUTES]


def token_client(user, scheme: str = "Token") -> Client:
    return Client(HTTP_AUTHORIZATION=f"{scheme} {token_for(user)}", HTTP_ACCEPT="*/*")


def test_the_township_technologist_reaches_every_route_of_their_study(technologist, archive):
    client = token_client(technologist)
    for url in routes(archive) + ["/dicomweb" + route for route in SEARCH_ROUTES]:
        got = client.get(url)
        assert got.status_code == 200, url
        # HEAD wherever GET (RFC 9110 9.1), the same media type; it was 405.
        head = client.head(url)
        assert head.status_code == 200, url
        assert head["Content-Type"].split(";")[0] == got["Content-Type"].split(";")[0], url


def test_the_radiologist_reaches_every_route_with_a_bearer_token_or_the_session(
    radiologist, radiologist_client, archive
):
    bearer = token_client(radiologist, "Bearer")
    for url in routes(archive):
        assert bearer.get(url).status_code == 200, url
        assert radiologist_client.get(url).status_code == 200, url


def test_another_townships_technologist_gets_404_on_every_route(outsider, outsider_client, archive):
    client = token_client(outsider)
    for url in routes(archive):
        assert client.get(url).status_code == 404, url
        assert outsider_client.get(url).status_code == 404, url


def test_each_refusal_of_a_study_that_exists_is_audited_under_its_township(outsider, archive):
    client = token_client(outsider)
    zhang = archive.studies["zhang_ct"][0]
    for url in routes(archive):
        assert client.get(url).status_code == 404, url
    refused = AuditEvent.objects.filter(action="cloudpacs.study.access_refused").order_by("pk")
    assert refused.count() == len(STUDY_ROUTES)
    assert {event.object_id for event in refused} == {zhang}
    assert {event.facility_id for event in refused} == {archive.township.pk}
    assert {event.actor_id for event in refused} == {outsider.pk}
    assert {event.detail["via"] for event in refused} >= {"study", "frames", "wado-uri", "study-rendered"}
    # What is never refused, because it does not exist, leaves nothing to record.
    assert client.get("/dicomweb/studies/1.2.3.4.5/metadata").status_code == 404
    assert refused.count() == len(STUDY_ROUTES)


def test_another_townships_technologist_finds_nothing_of_it(outsider, archive):
    client = token_client(outsider)
    zhang = archive.studies["zhang_ct"][0]
    for route in SEARCH_ROUTES:
        response = client.get("/dicomweb" + route)
        assert response.status_code in (200, 204)
        assert zhang.encode() not in response.content
        assert archive.studies["other_zhang"][0].encode() in response.content
    assert client.get("/dicomweb/studies", {"StudyInstanceUID": zhang}).status_code == 204


def test_an_administrator_is_refused_everywhere(administrator, administrator_client, archive):
    for url in routes(archive) + ["/dicomweb" + route for route in SEARCH_ROUTES]:
        assert token_client(administrator).get(url).status_code == 403, url
        assert administrator_client.get(url).status_code == 403, url


def test_an_anonymous_caller_gets_401_with_a_challenge_everywhere(archive):
    client = Client()
    for url in routes(archive) + ["/dicomweb" + route for route in SEARCH_ROUTES]:
        response = client.get(url)
        assert response.status_code == 401, url
        assert "Bearer" in response["WWW-Authenticate"]
    response = client.post("/dicomweb/studies", b"", content_type="multipart/related; boundary=x")
    assert response.status_code == 401


def test_a_wrong_token_is_401_not_a_fallback_to_the_session(technologist_client, archive):
    response = technologist_client.get("/dicomweb/studies", HTTP_AUTHORIZATION="Token not-a-real-token")
    assert response.status_code == 401
    assert "WWW-Authenticate" in response


def test_storing_is_for_technologists_into_their_own_studies(
    radiologist, administrator, outsider, technologist, archive
):
    content_type = 'multipart/related; type="application/dicom"; boundary=b'
    body = b"--b--\r\n"
    assert token_client(radiologist).post("/dicomweb/studies", body, content_type=content_type).status_code == 403
    assert token_client(administrator).post("/dicomweb/studies", body, content_type=content_type).status_code == 403
    study = archive.studies["zhang_ct"][0]
    response = token_client(outsider).post(f"/dicomweb/studies/{study}", body, content_type=content_type)
    assert response.status_code == 404
    assert token_client(technologist).post("/dicomweb/studies", body, content_type=content_type).status_code == 400


def test_cors_answers_only_the_configured_viewer_origin(settings, technologist, archive):
    settings.DICOMWEB_CORS_ORIGINS = ["http://viewer.example:3000"]
    client = token_client(technologist)
    preflight = Client().options(
        "/dicomweb/studies",
        HTTP_ORIGIN="http://viewer.example:3000",
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="GET",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization",
    )
    assert preflight.status_code == 204
    assert preflight["Access-Control-Allow-Origin"] == "http://viewer.example:3000"
    assert "Authorization" in preflight["Access-Control-Allow-Headers"]
    response = client.get("/dicomweb/studies", HTTP_ORIGIN="http://viewer.example:3000")
    assert response["Access-Control-Allow-Origin"] == "http://viewer.example:3000"
    elsewhere = client.get("/dicomweb/studies", HTTP_ORIGIN="http://evil.example")
    assert "Access-Control-Allow-Origin" not in elsewhere


def test_without_configured_origins_there_are_no_cors_headers(technologist, archive):
    response = token_client(technologist).get("/dicomweb/studies", HTTP_ORIGIN="http://viewer.example:3000")
    assert "Access-Control-Allow-Origin" not in response
