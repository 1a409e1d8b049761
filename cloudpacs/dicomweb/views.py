"""DICOMweb routes. Each one authenticates (session or token), scopes to the studies the
user may open (facilities.access.studies_for: the same rule as the pages), then calls
the QIDO, WADO, STOW or rendering helpers of this package."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any, BinaryIO

from django.db.models import QuerySet
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse
from django.shortcuts import get_object_or_404
from django.urls import reverse

from cloudpacs import counts, services, storage
from cloudpacs.dicomweb import json as dj
from cloudpacs.dicomweb import multipart, nativexml, qido, rendering, stow, wado
from cloudpacs.dicomweb.http import (
    DicomwebError,
    MediaRange,
    accepted,
    bad_request,
    dicomweb_view,
    not_acceptable,
    request_body,
)
from cloudpacs.models import Instance, Series, Study
from facilities.access import TECHNOLOGIST, has_role, refused_study_uid, studies_for
from facilities.services import audit

logger = logging.getLogger("cloudpacs.dicomweb")

DICOM_JSON = "application/dicom+json"
# A minute: long enough for the viewer's loader to reuse the first frame the page fetched
# ahead of it, short enough that a corrected image (DICOM_OVERWRITE_POLICY replaces an
# instance's content before signing) is not shown from a browser's cache for long.
CACHE_IMMUTABLE = "private, max-age=60"
THUMBNAIL_SIZE = (128, 128)
MAX_VIEWPORT = 4096
NO_FUZZY_MATCHING = "The fuzzymatching parameter is not supported. Only literal matching has been performed."
MORE_RESULTS = (
    '299 yunying "The number of results exceeded the maximum supported by the server. '
    'Additional results can be requested."'
)


# --- Scope and URLs -------------------------------------------------------------


def _studies(request: HttpRequest) -> QuerySet[Study]:
    return studies_for(request.user)


def _study(request: HttpRequest, study_uid: str) -> Study:
    try:
        return get_object_or_404(_studies(request).select_related(None).select_related("patient"), study_uid=study_uid)
    except Http404:
        _audit_refused(request, study_uid)
        raise


def _scoped_instance(request: HttpRequest, study_uid: str, series_uid: str, sop_uid: str) -> Instance:
    """An instance of a study the user may open, in one query: what a frame request needs
    (it comes 200 times for a CT series, so the study is not read separately)."""
    try:
        return get_object_or_404(
            Instance.objects.only("pk", "storage_key", "transfer_syntax_uid", "number_of_frames"),
            sop_instance_uid=sop_uid,
            series__series_uid=series_uid,
            series__study__study_uid=study_uid,
            series__study__in=_studies(request).select_related(None).values("pk"),
        )
    except Http404:
        if not _studies(request).filter(study_uid=study_uid).exists():
            _audit_refused(request, study_uid)
        raise


def _audit_refused(request: HttpRequest, study_uid: str) -> None:
    """A route that names a study the user may not open answers 404, as for a study that
    does not exist; when it does exist (another township's, or one not sent for reading),
    the attempt goes into the audit trail, under the study's facility, for its
    administrators to see (the same trail as the retrieves that were allowed)."""
    refused_study_uid(request, study_uid, via=(request.resolver_match.url_name or "") if request.resolver_match else "")


def _series(study: Study, series_uid: str) -> Series:
    return get_object_or_404(Series, study=study, series_uid=series_uid)


def _instance(study: Study, series_uid: str, sop_uid: str) -> Instance:
    return get_object_or_404(
        Instance.objects.select_related("series"),
        series__study=study,
        series__series_uid=series_uid,
        sop_instance_uid=sop_uid,
    )


def _base(request: HttpRequest) -> str:
    return request.build_absolute_uri(reverse("dicomweb:studies"))


def _study_url(base: str, study_uid: str) -> str:
    return f"{base}/{study_uid}"


def _series_url(base: str, study_uid: str, series_uid: str) -> str:
    return f"{base}/{study_uid}/series/{series_uid}"


def _instance_url(base: str, study_uid: str, series_uid: str, sop_uid: str) -> str:
    return f"{base}/{study_uid}/series/{series_uid}/instances/{sop_uid}"


def _open(instance: Instance) -> BinaryIO:
    """The instance's stored file, opened for reading (ranged GETs on an object store).
    A file that is missing, or a store that is down, is a 503: the index names it, so
    the client may try again."""
    try:
        return storage.open_key(instance.storage_key)
    except OSError as exc:
        logger.error("stored file of %s cannot be read (%s): %s", instance.sop_instance_uid, instance.storage_key, exc)
        raise DicomwebError(503, "the stored file cannot be read now") from exc


def _audit_retrieve(request: HttpRequest, study: Study, what: str, **detail: Any) -> None:
    audit("cloudpacs.study.retrieved", request=request, obj=study, facility=study.facility, via=what, **detail)


# --- QIDO-RS --------------------------------------------------------------------


def _json_response(data: Any, status: int = 200) -> HttpResponse:
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return HttpResponse(body, status=status, content_type=DICOM_JSON)


def _wants_xml(request: HttpRequest) -> bool:
    """DICOM JSON (the default), or the Native DICOM Model (PS3.19) for an Accept of
    multipart/related; type="application/dicom+xml" preferred to it, which PS3.18 requires
    for metadata (Table 10.4.4-1) and searches alike; else 406."""
    for item in accepted(request):
        if item.matches(DICOM_JSON) or item.matches("application/json"):
            return False
        if item.media_type == "multipart/related" and item.part_type == nativexml.DICOM_XML:
            return True
    raise not_acceptable(
        'this resource is sent as application/dicom+json or multipart/related; type="application/dicom+xml"'
    )


def _xml_response(datasets: list[dict[str, Any]], status: int = 200) -> HttpResponse:
    boundary = multipart.new_boundary()
    parts = [
        multipart.OutPart(nativexml.DICOM_XML, data=nativexml.dataset_xml(dataset).encode("utf-8"))
        for dataset in datasets
    ]
    return HttpResponse(
        multipart.encode(parts, boundary),
        status=status,
        content_type=multipart.content_type(nativexml.DICOM_XML, boundary),
    )


def _search_response(
    request: HttpRequest, results: list[dj.JsonDataset], more: bool, query: qido.Query, as_xml: bool
) -> HttpResponse:
    # PS3.18 8.3.4.4.1: no match is 204 No Content (CP-2473 would make it 200 with an
    # empty array; dicomweb-client and OHIF read both).
    if not results:
        response = HttpResponse(status=204)
    else:
        response = _xml_response(results) if as_xml else _json_response(results)
    warnings = []
    if more:
        warnings.append(MORE_RESULTS)
    if request.GET.get("fuzzymatching", "").lower() == "true":
        # PS3.18 8.3.4.2: an origin server without fuzzy matching says so, with its base URI.
        service = request.build_absolute_uri(reverse("dicomweb:studies")).removesuffix("/studies")
        warnings.append(f'299 {service} "{NO_FUZZY_MATCHING}"')
    if query.ignored:
        names = ", ".join(sorted(set(query.ignored)))
        warnings.append(f'299 yunying "The following attribute keys are not supported and were ignored: {names}"')
    if warnings:
        response["Warning"] = ", ".join(warnings)
    return response


def _search_studies(request: HttpRequest) -> HttpResponse:
    as_xml = _wants_xml(request)
    query = qido.parse(request.GET, "study")
    # No filter is added beside the scope's: a redundant one (the patient's facility) made
    # PostgreSQL misjudge how many rows match and sort a whole township instead of walking
    # the (facility, date) order index.
    queryset = _studies(request).select_related(None)
    queryset = queryset.filter(query.condition).order_by("-study_date", "-study_time", "-pk")
    rows, more = qido.study_page(queryset, query)
    base = _base(request)
    results = [
        qido.sorted_dataset(qido.study_attributes(row, _study_url(base, row["study_uid"]), query)) for row in rows
    ]
    return _search_response(request, results, more, query, as_xml)


def _search_series(request: HttpRequest, study: Study | None) -> HttpResponse:
    as_xml = _wants_xml(request)
    query = qido.parse(request.GET, "series")
    if study is None:
        queryset = Series.objects.filter(study__in=_studies(request).values("pk")).select_related("study__patient")
    else:
        queryset = Series.objects.filter(study=study).select_related("study__patient")
    queryset = queryset.filter(query.condition).order_by("study_id", "series_number", "pk")
    rows, more = qido.page(counts.with_counted(queryset), query)
    counts.exact_series(rows)
    counts.exact_studies((series.study for series in rows), gate=counts.counted(rows))
    base = _base(request)
    results = []
    for series in rows:
        url = _series_url(base, series.study.study_uid, series.series_uid)
        attributes = qido.series_attributes(series, url, query)
        study_part = qido.study_attributes(
            qido.study_row(series.study), _study_url(base, series.study.study_uid), query
        )
        # Searching across studies answers with the study's attributes too; within a
        # study, with those the query names.
        attributes = {**(study_part if study is None else qido.named(study_part, query)), **attributes}
        results.append(qido.sorted_dataset(attributes))
    return _search_response(request, results, more, query, as_xml)


def _search_instances(request: HttpRequest, study: Study | None, series: Series | None) -> HttpResponse:
    as_xml = _wants_xml(request)
    query = qido.parse(request.GET, "instance")
    queryset = Instance.objects.select_related("series__study__patient")
    if series is not None:
        queryset = queryset.filter(series=series)
    elif study is not None:
        queryset = queryset.filter(series__study=study)
    else:
        queryset = queryset.filter(series__study__in=_studies(request).values("pk"))
    queryset = queryset.filter(query.condition).order_by("series__study_id", "series_id", "instance_number", "pk")
    rows, more = qido.page(counts.with_counted(queryset), query)
    gate = counts.counted(rows)
    counts.exact_series((instance.series for instance in rows), gate=gate)
    counts.exact_studies((instance.series.study for instance in rows), gate=gate)
    base = _base(request)
    results = []
    for instance in rows:
        s = instance.series
        url = _instance_url(base, s.study.study_uid, s.series_uid, instance.sop_instance_uid)
        attributes = qido.instance_attributes(instance, url)
        series_part = qido.series_attributes(s, _series_url(base, s.study.study_uid, s.series_uid), query)
        study_part = qido.study_attributes(qido.study_row(s.study), _study_url(base, s.study.study_uid), query)
        # The levels above the one searched within come whole; the others, as far as the
        # query names their attributes.
        attributes = {
            **(study_part if study is None else qido.named(study_part, query)),
            **(series_part if series is None else qido.named(series_part, query)),
            **attributes,
        }
        results.append(qido.sorted_dataset(attributes))
    return _search_response(request, results, more, query, as_xml)


@dicomweb_view("GET", "POST")
def studies(request: HttpRequest) -> HttpResponseBase:
    if request.method == "POST":
        return _store(request, None)
    return _search_studies(request)


@dicomweb_view("GET")
def all_series(request: HttpRequest) -> HttpResponseBase:
    return _search_series(request, None)


@dicomweb_view("GET")
def all_instances(request: HttpRequest) -> HttpResponseBase:
    return _search_instances(request, None, None)


@dicomweb_view("GET")
def study_series(request: HttpRequest, study_uid: str) -> HttpResponseBase:
    return _search_series(request, _study(request, study_uid))


@dicomweb_view("GET")
def study_instances(request: HttpRequest, study_uid: str) -> HttpResponseBase:
    return _search_instances(request, _study(request, study_uid), None)


@dicomweb_view("GET")
def series_instances(request: HttpRequest, study_uid: str, series_uid: str) -> HttpResponseBase:
    study = _study(request, study_uid)
    return _search_instances(request, study, _series(study, series_uid))


# --- STOW-RS --------------------------------------------------------------------


def _store(request: HttpRequest, study_uid: str | None) -> HttpResponse:
    if not has_role(request.user, TECHNOLOGIST):
        raise DicomwebError(403, "only a township's technologists store images")
    if study_uid is not None and Study.objects.filter(study_uid=study_uid).exists():
        _study(request, study_uid)  # 404 for a study outside the user's facility
    boundary = stow.check_content_type(request.headers.get("Content-Type", ""))
    base = _base(request)
    report = stow.store(
        request_body(request),
        boundary,
        request.user,  # type: ignore[arg-type]
        study_uid,
        lambda st, se, sop: _instance_url(base, st, se, sop),
    )
    for study in report.studies.values():
        audit(
            "cloudpacs.study.stored_over_web",
            request=request,
            obj=study,
            facility=study.facility,
            instances=len(report.referenced),
            failed=len(report.failed),
        )
    response = _json_response(report.as_json(lambda uid: _study_url(base, uid)), status=report.status)
    if report.comments:
        # The Error Comments a DICOM sender would read (PS3.18 10.5.3 allows Warning fields).
        response["Warning"] = ", ".join(f'299 yunying "{comment}"' for comment in report.comments)
    return response


# --- WADO-RS: instances ---------------------------------------------------------


def _retrieve(request: HttpRequest, study: Study, instances: list[Instance], level: str) -> HttpResponseBase:
    if not instances:
        raise Http404
    ranges = accepted(request)
    if _wants_bulkdata(ranges):
        return _retrieve_bulkdata(request, study, instances, level)
    choice = wado.choose_instance_syntax(
        ranges, {instance.transfer_syntax_uid for instance in instances}, one=level == "instance"
    )
    if choice.single_part:
        return _retrieve_alone(request, study, instances[0], choice.transfer_syntax)
    base = _base(request)

    def parts() -> Iterator[multipart.OutPart]:
        for instance in instances:
            location = _instance_url(base, study.study_uid, instance.series.series_uid, instance.sop_instance_uid)
            if choice.transfer_syntax is None or instance.transfer_syntax_uid == choice.transfer_syntax:
                yield multipart.OutPart(
                    f"{wado.DICOM}; transfer-syntax={instance.transfer_syntax_uid}",
                    chunks=storage.iter_key(instance.storage_key),
                    location=location,
                )
            else:
                with storage.open_key(instance.storage_key) as stream:
                    data = wado.converted_instance(stream, choice.transfer_syntax)
                yield multipart.OutPart(
                    f"{wado.DICOM}; transfer-syntax={choice.transfer_syntax}", data=data, location=location
                )

    _audit_retrieve(request, study, level, instances=len(instances))
    boundary = multipart.new_boundary()
    response = StreamingHttpResponse(
        multipart.stream(parts(), boundary),
        content_type=multipart.content_type(wado.DICOM, boundary, choice.transfer_syntax),
    )
    return response


def _retrieve_alone(
    request: HttpRequest, study: Study, item: Instance, transfer_syntax: str | None
) -> HttpResponseBase:
    """One instance as a single part application/dicom body (Accept: application/dicom)."""
    _audit_retrieve(request, study, "instance", instances=1)
    if transfer_syntax is None or item.transfer_syntax_uid == transfer_syntax:
        return StreamingHttpResponse(
            storage.iter_key(item.storage_key),
            content_type=f"{wado.DICOM}; transfer-syntax={item.transfer_syntax_uid}",
        )
    with _open(item) as stream:
        data = wado.converted_instance(stream, transfer_syntax)
    return HttpResponse(data, content_type=f"{wado.DICOM}; transfer-syntax={transfer_syntax}")


def _wants_bulkdata(ranges: list[MediaRange]) -> bool:
    """Whether the best acceptable media type for an instance resource is
    multipart/related; type="application/octet-stream" rather than application/dicom:
    PS3.18 10.4.4 keeps that request "for historical reasons", equivalent to asking for
    the resource's bulk data (`*/*` is application/dicom, the resource's default)."""
    for item in ranges:
        if item.media_type == "multipart/related" and item.part_type == wado.OCTET_STREAM:
            return True
        if item.matches(wado.DICOM):
            return False
    return False


def _retrieve_bulkdata(request: HttpRequest, study: Study, instances: list[Instance], level: str) -> HttpResponseBase:
    """The bulk data of the instances (PS3.18 10.4.3.3.5): each value that their metadata
    gives a BulkDataURI, one part each, its Content-Location that URI, as
    application/octet-stream: Explicit VR Little Endian, pixel data uncompressed (every
    frame, one after another, decoded when stored compressed). A value that cannot be
    given so (a video, pixel data no installed decoder reads) is left out, as PS3.18 lets
    a retrieve leave out what it cannot convert; with nothing left at all it is 406."""
    base = _base(request)
    queryset = Instance.objects.filter(pk__in=[item.pk for item in instances])
    try:
        documents = services.instances_metadata(
            queryset, lambda series_uid, sop_uid: _instance_url(base, study.study_uid, series_uid, sop_uid)
        )
    except OSError:
        raise DicomwebError(500, "a stored file is missing") from None
    uris: dict[str, list[tuple[str, str]]] = {}
    for document in documents:
        parsed = json.loads(document)
        sop_uid = parsed.get("00080018", {}).get("Value", [""])[0]
        uris[sop_uid] = [
            (tag, element["BulkDataURI"])
            for tag, element in parsed.items()
            if isinstance(element, dict) and "BulkDataURI" in element
        ]
    wanted = [(item, uris.get(item.sop_instance_uid, [])) for item in instances]
    wanted = [(item, values) for item, values in wanted if values and not wado.is_video(item.transfer_syntax_uid)]
    if not wanted:
        raise not_acceptable("these instances have no bulk data that can be sent as application/octet-stream")

    def parts() -> Iterator[multipart.OutPart]:
        for item, values in wanted:
            try:
                with _open(item) as stream:
                    found = wado.octet_stream_values(stream, [tag for tag, _ in values])
            except (DicomwebError, wado.CannotDecode) as exc:
                logger.warning("bulk data of %s left out: %s", item.sop_instance_uid, exc)
                continue
            for tag, uri in values:
                if tag in found:
                    yield multipart.OutPart(
                        f"{wado.OCTET_STREAM}; transfer-syntax={wado.EXPLICIT_LE}",
                        data=found[tag],
                        location=uri,
                        length=len(found[tag]),
                    )

    _audit_retrieve(request, study, f"{level}-bulkdata", instances=len(wanted))
    boundary = multipart.new_boundary()
    return StreamingHttpResponse(
        multipart.stream(parts(), boundary),
        content_type=multipart.content_type(wado.OCTET_STREAM, boundary, wado.EXPLICIT_LE),
    )


def _ordered(queryset: QuerySet[Instance]) -> list[Instance]:
    return list(
        queryset.select_related("series").order_by("series__series_number", "series_id", "instance_number", "pk")
    )


@dicomweb_view("GET", "POST")
def study(request: HttpRequest, study_uid: str) -> HttpResponseBase:
    if request.method == "POST":
        return _store(request, study_uid)
    found = _study(request, study_uid)
    return _retrieve(request, found, _ordered(Instance.objects.filter(series__study=found)), "study")


@dicomweb_view("GET")
def series(request: HttpRequest, study_uid: str, series_uid: str) -> HttpResponseBase:
    found = _study(request, study_uid)
    chosen = _series(found, series_uid)
    return _retrieve(request, found, _ordered(Instance.objects.filter(series=chosen)), "series")


@dicomweb_view("GET")
def instance(request: HttpRequest, study_uid: str, series_uid: str, sop_uid: str) -> HttpResponseBase:
    found = _study(request, study_uid)
    return _retrieve(request, found, [_instance(found, series_uid, sop_uid)], "instance")


# --- WADO-RS: metadata and bulk data --------------------------------------------


def _metadata(request: HttpRequest, study: Study, instances: QuerySet[Instance], level: str) -> HttpResponse:
    as_xml = _wants_xml(request)
    base = _base(request)
    ordered = instances.order_by("series__series_number", "series_id", "instance_number", "pk")
    try:
        documents = services.instances_metadata(
            ordered, lambda series_uid, sop_uid: _instance_url(base, study.study_uid, series_uid, sop_uid)
        )
    except OSError:
        raise DicomwebError(500, "a stored file is missing") from None
    if not documents:
        raise Http404
    if level != "instance":
        _audit_retrieve(request, study, f"{level}-metadata", instances=len(documents))
    if as_xml:
        return _xml_response([json.loads(document) for document in documents])
    return HttpResponse(dj.json_array(documents).encode("utf-8"), content_type=DICOM_JSON)


@dicomweb_view("GET")
def study_metadata(request: HttpRequest, study_uid: str) -> HttpResponseBase:
    found = _study(request, study_uid)
    return _metadata(request, found, Instance.objects.filter(series__study=found), "study")


@dicomweb_view("GET")
def series_metadata(request: HttpRequest, study_uid: str, series_uid: str) -> HttpResponseBase:
    found = _study(request, study_uid)
    chosen = _series(found, series_uid)
    return _metadata(request, found, Instance.objects.filter(series=chosen), "series")


@dicomweb_view("GET")
def instance_metadata(request: HttpRequest, study_uid: str, series_uid: str, sop_uid: str) -> HttpResponseBase:
    found = _study(request, study_uid)
    chosen = Instance.objects.filter(series__study=found, series__series_uid=series_uid, sop_instance_uid=sop_uid)
    return _metadata(request, found, chosen, "instance")


@dicomweb_view("GET")
def bulkdata(request: HttpRequest, study_uid: str, series_uid: str, sop_uid: str, tag: str) -> HttpResponseBase:
    found = _study(request, study_uid)
    item = _instance(found, series_uid, sop_uid)
    try:
        with _open(item) as stream:
            parts, media_type, transfer_syntax = wado.bulk_value(stream, tag)
    except LookupError:
        raise Http404 from None
    boundary = multipart.new_boundary()
    body = multipart.encode(
        [multipart.OutPart(f"{media_type}; transfer-syntax={transfer_syntax}", data=data) for data in parts], boundary
    )
    response = HttpResponse(body, content_type=multipart.content_type(media_type, boundary))
    response["Cache-Control"] = CACHE_IMMUTABLE
    return response


# --- WADO-RS: frames ------------------------------------------------------------


def _frame_numbers(text: str) -> list[int]:
    try:
        numbers = [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise bad_request(f"{text!r} is not a list of frame numbers") from None
    if not numbers or any(number < 1 for number in numbers):
        raise bad_request("frame numbers start at 1")
    return numbers


def _instance_frames(request: HttpRequest, item: Instance, numbers: list[int]) -> tuple[wado.FrameChoice, list[bytes]]:
    """The frames `numbers` of an instance in the encoding the Accept header allows."""
    choice = wado.choose_frame_syntax(accepted(request), item.transfer_syntax_uid)
    try:
        with _open(item) as stream:
            return choice, wado.frames(stream, numbers, decode=choice.decode, cache_key=item.storage_key)
    except LookupError:
        raise Http404 from None
    except wado.CannotDecode as exc:
        logger.warning("frames of %s cannot be decoded: %s", item.sop_instance_uid, exc)
        raise not_acceptable(
            f"the frames are stored as {item.transfer_syntax_uid} and cannot be decoded here ({exc}); "
            "ask for them as stored (transfer-syntax=*)"
        ) from None


@dicomweb_view("GET")
def frames(request: HttpRequest, study_uid: str, series_uid: str, sop_uid: str, frame_list: str) -> HttpResponseBase:
    numbers = _frame_numbers(frame_list)
    item = _scoped_instance(request, study_uid, series_uid, sop_uid)
    choice, data = _instance_frames(request, item, numbers)
    part_type = f"{choice.media_type}; transfer-syntax={choice.transfer_syntax}"
    boundary = multipart.new_boundary()
    body = multipart.encode([multipart.OutPart(part_type, data=frame, length=len(frame)) for frame in data], boundary)
    response = HttpResponse(
        body, content_type=multipart.content_type(choice.media_type, boundary, choice.transfer_syntax)
    )
    response["Cache-Control"] = CACHE_IMMUTABLE
    return response


# At most this many instances, and frames, in one request for the frames of several instances.
MAX_BATCH_INSTANCES = 64
MAX_BATCH_FRAMES = 256


@dicomweb_view("GET")
def series_frames(request: HttpRequest, study_uid: str, series_uid: str) -> HttpResponseBase:
    """The frames of several instances of a series in one multipart/related answer
    (`?instances=<SOP Instance UID>,...`): every frame of each instance, in the order asked,
    each part as `/instances/{i}/frames/{n}` would send it, with that URL as its
    Content-Location and its Content-Length. Not in PS3.18, where a request's frames are
    those of one instance: a CT series is hundreds of single-frame instances, and one
    request each costs more than the frame. The same scope as a frame's request, and, like
    it, not audited on its own: the series' metadata, which the viewer reads first, is."""
    uids = [uid for uid in request.GET.get("instances", "").split(",") if uid]
    if not uids or len(uids) > MAX_BATCH_INSTANCES or len(set(uids)) != len(uids):
        raise bad_request(f"instances: 1 to {MAX_BATCH_INSTANCES} different SOP Instance UIDs, comma-separated")
    found = {
        item.sop_instance_uid: item
        for item in Instance.objects.only(
            "pk", "sop_instance_uid", "storage_key", "transfer_syntax_uid", "number_of_frames"
        ).filter(
            sop_instance_uid__in=uids,
            series__series_uid=series_uid,
            series__study__study_uid=study_uid,
            series__study__in=_studies(request).select_related(None).values("pk"),
        )
    }
    if len(found) != len(uids):
        if not _studies(request).filter(study_uid=study_uid).exists():
            _audit_refused(request, study_uid)
        raise Http404
    if sum(item.number_of_frames or 1 for item in found.values()) > MAX_BATCH_FRAMES:
        raise bad_request(f"more than {MAX_BATCH_FRAMES} frames: ask for fewer instances at a time")
    base = _base(request)
    parts: list[multipart.OutPart] = []
    for uid in uids:
        item = found[uid]
        numbers = list(range(1, (item.number_of_frames or 1) + 1))
        choice, data = _instance_frames(request, item, numbers)
        part_type = f"{choice.media_type}; transfer-syntax={choice.transfer_syntax}"
        location = _instance_url(base, study_uid, series_uid, uid)
        parts.extend(
            multipart.OutPart(part_type, data=frame, location=f"{location}/frames/{number}", length=len(frame))
            for number, frame in zip(numbers, data, strict=True)
        )
    boundary = multipart.new_boundary()
    # The parts' types may differ (each instance's own transfer syntax): the whole says
    # the first's, as a frames answer does.
    first = parts[0].content_type.split(";")[0]
    response = HttpResponse(multipart.encode(parts, boundary), content_type=multipart.content_type(first, boundary))
    response["Cache-Control"] = CACHE_IMMUTABLE
    return response


# --- Rendered and thumbnails ----------------------------------------------------


def image_media_type(request: HttpRequest, explicit: str | None = None) -> str:
    """JPEG unless PNG is preferred. A browser's image Accept header (image/avif,
    image/webp,image/apng,*/*;q=0.8) gets JPEG, not an error."""
    header = explicit or request.GET.get("accept") or request.headers.get("Accept") or "image/jpeg"
    for item in accepted_from(header):
        for media_type in ("image/jpeg", "image/png"):
            if item.matches(media_type):
                return media_type
    raise not_acceptable("rendered images are sent as image/jpeg or image/png")


def accepted_from(header: str) -> list[Any]:
    request = HttpRequest()
    request.META["HTTP_ACCEPT"] = header
    return accepted(request)


def _numbers(text: str, name: str) -> list[float]:
    try:
        return [float(item) for item in text.split(",")]
    except ValueError:
        raise bad_request(f"{name}={text!r} is not a list of numbers") from None


def render_options(request: HttpRequest, *, thumbnail: bool = False) -> rendering.RenderOptions:
    params = request.GET
    window = None
    if params.get("window"):
        parts = params["window"].split(",")
        values = _numbers(",".join(parts[:2]), "window")
        if len(values) != 2 or values[1] <= 0:
            raise bad_request("window is center,width[,function] with a positive width")
        function = (parts[2] if len(parts) > 2 else "linear").strip().upper().replace("-", "_")
        if function not in rendering.VOI_FUNCTIONS:
            raise bad_request(f"window function {function.lower()!r} is not linear, linear-exact or sigmoid")
        window = rendering.Window(values[0], values[1], function)
    viewport = THUMBNAIL_SIZE if thumbnail else None
    region = None
    if params.get("viewport"):
        values = _numbers(params["viewport"], "viewport")
        if len(values) not in (2, 6) or not all(0 < value <= MAX_VIEWPORT for value in values[:2]):
            raise bad_request(f"viewport is vw,vh[,sx,sy,sw,sh] with sizes from 1 to {MAX_VIEWPORT}")
        viewport = (int(values[0]), int(values[1]))
        if len(values) == 6:
            sx, sy, sw, sh = (int(value) for value in values[2:])
            if sw <= 0 or sh <= 0:
                raise bad_request("the viewport's source region must have a positive size")
            region = (sx, sy, sw, sh)
    quality = 90 if not thumbnail else 80
    if params.get("quality"):
        try:
            quality = int(params["quality"])
        except ValueError:
            raise bad_request("quality is an integer from 1 to 100") from None
        if not 1 <= quality <= 100:
            raise bad_request("quality is an integer from 1 to 100")
    return rendering.RenderOptions(
        media_type=image_media_type(request),
        window=window,
        viewport=viewport,
        region=region,
        quality=quality,
        enlarge=not thumbnail,
    )


def _rendered(item: Instance, frame_number: int, options: rendering.RenderOptions) -> HttpResponse:
    frames_in_file = item.number_of_frames or 1
    if not 1 <= frame_number <= frames_in_file:
        raise Http404
    try:
        with _open(item) as stream:
            data = rendering.render(stream, frame_number - 1, options)
    except rendering.CannotDecode as exc:
        # The request is sound; no image can be made of what is stored (as for frames).
        logger.warning("%s cannot be rendered: %s", item.sop_instance_uid, exc)
        raise not_acceptable(f"{exc}; the instance itself can be retrieved as stored") from exc
    except rendering.RenderingError as exc:
        raise DicomwebError(400, str(exc)) from exc
    response = HttpResponse(data, content_type=options.media_type)
    response["Cache-Control"] = CACHE_IMMUTABLE
    return response


@dicomweb_view("GET")
def instance_rendered(request: HttpRequest, study_uid: str, series_uid: str, sop_uid: str) -> HttpResponseBase:
    # The viewer's first image (its stand-in) comes this way: the scope and the instance in
    # one query, as for frames.
    options = render_options(request)
    return _rendered(_scoped_instance(request, study_uid, series_uid, sop_uid), 1, options)


@dicomweb_view("GET")
def frame_rendered(
    request: HttpRequest, study_uid: str, series_uid: str, sop_uid: str, frame_list: str
) -> HttpResponseBase:
    numbers = _frame_numbers(frame_list)
    options = render_options(request)
    return _rendered(_scoped_instance(request, study_uid, series_uid, sop_uid), numbers[0], options)


def representative(instances: QuerySet[Instance]) -> Instance:
    """The middle image of a series (of the first series with images, for a study)."""
    ordered = list(
        instances.filter(rows__isnull=False)
        .exclude(transfer_syntax_uid__in=list(wado.VIDEO_MEDIA_TYPES))
        .order_by("series__series_number", "series_id", "instance_number", "pk")
        .values_list("pk", "series_id")
    )
    if not ordered:
        raise Http404
    first_series = ordered[0][1]
    in_series = [pk for pk, series_id in ordered if series_id == first_series]
    return Instance.objects.select_related("series").get(pk=in_series[len(in_series) // 2])


# PS3.18 makes the rendered study and series mandatory resources (Table 10.3-2). Asked for
# as multipart/related; type="image/jpeg" (or png), they are every image of the study or
# series rendered, one part each, as Table 10.4.4-1 reads them. Asked for as a single
# image/jpeg, which the standard expects to be 406 for a resource of many items, they are
# the one image their thumbnail shows, rendered with the request's parameters: that is
# what dicomweb-client's retrieve_series_rendered asks for and what Orthanc's DICOMweb
# plugin answers.


def _wants_parts(request: HttpRequest) -> bool:
    header = request.GET.get("accept") or request.headers.get("Accept") or "image/jpeg"
    for item in accepted_from(header):
        if item.matches("image/jpeg") or item.matches("image/png"):
            return item.media_type == "multipart/related"
    return False


def _rendered_images(request: HttpRequest, study: Study, instances: QuerySet[Instance]) -> HttpResponseBase:
    options = render_options(request)
    if not _wants_parts(request):
        return _rendered(representative(instances), 1, options)
    images = list(
        instances.filter(rows__isnull=False)
        .exclude(transfer_syntax_uid__in=list(wado.VIDEO_MEDIA_TYPES))
        .select_related("series")
        .order_by("series__series_number", "series_id", "instance_number", "pk")
    )
    if not images:
        raise Http404
    base = _base(request)

    def parts() -> Iterator[multipart.OutPart]:
        for item in images:
            try:
                with _open(item) as stream:
                    data = rendering.render(stream, 0, options)
            except (DicomwebError, rendering.RenderingError) as exc:
                # One image that cannot be rendered does not end the others' answer.
                logger.warning("%s left out of a rendered %s: %s", item.sop_instance_uid, study.study_uid, exc)
                continue
            location = _instance_url(base, study.study_uid, item.series.series_uid, item.sop_instance_uid)
            yield multipart.OutPart(options.media_type, data=data, location=f"{location}/rendered")

    boundary = multipart.new_boundary()
    response = StreamingHttpResponse(
        multipart.stream(parts(), boundary), content_type=multipart.content_type(options.media_type, boundary)
    )
    response["Cache-Control"] = CACHE_IMMUTABLE
    return response


@dicomweb_view("GET")
def study_rendered(request: HttpRequest, study_uid: str) -> HttpResponseBase:
    found = _study(request, study_uid)
    return _rendered_images(request, found, Instance.objects.filter(series__study=found))


@dicomweb_view("GET")
def series_rendered(request: HttpRequest, study_uid: str, series_uid: str) -> HttpResponseBase:
    found = _study(request, study_uid)
    return _rendered_images(request, found, Instance.objects.filter(series=_series(found, series_uid)))


@dicomweb_view("GET")
def study_thumbnail(request: HttpRequest, study_uid: str) -> HttpResponseBase:
    options = render_options(request, thumbnail=True)
    found = _study(request, study_uid)
    return _rendered(representative(Instance.objects.filter(series__study=found)), 1, options)


@dicomweb_view("GET")
def series_thumbnail(request: HttpRequest, study_uid: str, series_uid: str) -> HttpResponseBase:
    options = render_options(request, thumbnail=True)
    found = _study(request, study_uid)
    return _rendered(representative(Instance.objects.filter(series=_series(found, series_uid))), 1, options)


@dicomweb_view("GET")
def instance_thumbnail(request: HttpRequest, study_uid: str, series_uid: str, sop_uid: str) -> HttpResponseBase:
    options = render_options(request, thumbnail=True)
    found = _study(request, study_uid)
    return _rendered(_instance(found, series_uid, sop_uid), 1, options)


@dicomweb_view("GET")
def frame_thumbnail(
    request: HttpRequest, study_uid: str, series_uid: str, sop_uid: str, frame_list: str
) -> HttpResponseBase:
    numbers = _frame_numbers(frame_list)
    options = render_options(request, thumbnail=True)
    found = _study(request, study_uid)
    return _rendered(_instance(found, series_uid, sop_uid), numbers[0], options)


# --- WADO-URI -------------------------------------------------------------------


@dicomweb_view("GET", accept_required=False)
def wado_uri(request: HttpRequest) -> HttpResponseBase:
    """PS3.18 9: ?requestType=WADO&studyUID=..&seriesUID=..&objectUID=..[&contentType=..]"""
    params = request.GET
    if params.get("requestType") != "WADO":
        raise bad_request("requestType must be WADO")
    uids = [params.get("studyUID", ""), params.get("seriesUID", ""), params.get("objectUID", "")]
    if not all(uids):
        raise bad_request("studyUID, seriesUID and objectUID are required")
    found = _study(request, uids[0])
    item = _instance(found, uids[1], uids[2])
    wanted = [value.strip() for value in params.get("contentType", "image/jpeg").split(",") if value.strip()]
    if "application/dicom" in wanted:
        transfer_syntax = params.get("transferSyntax")
        _audit_retrieve(request, found, "wado-uri", instances=1)
        if not transfer_syntax or transfer_syntax in {item.transfer_syntax_uid, "*"}:
            response: HttpResponseBase = FileResponse(_open(item), content_type="application/dicom")
        elif transfer_syntax == wado.EXPLICIT_LE:
            with _open(item) as stream:
                data = wado.converted_instance(stream, transfer_syntax)
            response = HttpResponse(data, content_type="application/dicom")
        else:
            raise not_acceptable(f"the instance is stored as {item.transfer_syntax_uid}")
        response["Content-Disposition"] = f'attachment; filename="{item.sop_instance_uid}.dcm"'
        return response
    media_type = image_media_type(request, ",".join(wanted))
    viewport = None
    if params.get("rows") or params.get("columns"):
        try:
            rows = int(params.get("rows") or params.get("columns") or 0)
            columns = int(params.get("columns") or params.get("rows") or 0)
        except ValueError:
            raise bad_request("rows and columns are integers") from None
        if not (0 < rows <= MAX_VIEWPORT and 0 < columns <= MAX_VIEWPORT):
            raise bad_request(f"rows and columns go from 1 to {MAX_VIEWPORT}")
        viewport = (columns, rows)
    window = None
    if params.get("windowCenter") and params.get("windowWidth"):
        center, width = _numbers(params["windowCenter"], "windowCenter"), _numbers(params["windowWidth"], "windowWidth")
        if width[0] <= 0:
            raise bad_request("windowWidth must be positive")
        window = rendering.Window(center[0], width[0])
    try:
        quality = int(params.get("imageQuality", "90"))
    except ValueError:
        raise bad_request("imageQuality is an integer from 1 to 100") from None
    try:
        frame_number = int(params.get("frameNumber", "1"))
    except ValueError:
        raise bad_request("frameNumber is an integer") from None
    options = rendering.RenderOptions(
        media_type=media_type, window=window, viewport=viewport, quality=max(1, min(quality, 100))
    )
    return _rendered(item, frame_number, options)
