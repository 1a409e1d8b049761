"""The OpenAPI schema of the machine interfaces, served at /api/schema/.

drf-spectacular describes the Django REST framework views by itself. The DICOMweb routes
(`cloudpacs/dicomweb/`) are plain Django views behind `dicomweb_view`, which it cannot
see: `add_dicomweb_paths`, a postprocessing hook, adds them from the URL patterns of
`cloudpacs.dicomweb.urls` and the table below, without touching the views. A route with
no entry in the table stops the schema from being built, so a new route cannot go
undocumented.
"""

from __future__ import annotations

import re
from typing import Any

from django.urls import URLPattern
from django.urls.resolvers import RoutePattern
from drf_spectacular.views import SpectacularAPIView
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import IsAuthenticated

from cloudpacs.dicomweb import urls as dicomweb_urls
from facilities.tokens import BearerAuthentication, TokenAuthentication

DICOM_JSON = "application/dicom+json"
MULTIPART = "multipart/related"
TEXT = "text/plain"

# A DICOM JSON dataset (PS3.18 F.2): attribute tags as keys, each with its VR and values.
DICOM_JSON_DATASET: dict[str, Any] = {
    "type": "object",
    "description": "A dataset in the DICOM JSON model (PS3.18 F.2), keyed by 8-digit hex tags.",
    "additionalProperties": {
        "type": "object",
        "properties": {
            "vr": {"type": "string"},
            "Value": {"type": "array", "items": {}},
            "BulkDataURI": {"type": "string"},
            "InlineBinary": {"type": "string"},
        },
        "required": ["vr"],
    },
}
BINARY = {"type": "string", "format": "binary"}


def _text_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {TEXT: {"schema": {"type": "string"}}}}


ERRORS = {
    "400": _text_response("A malformed parameter or body."),
    "401": _text_response("No session and no valid token (with a WWW-Authenticate challenge)."),
    "403": _text_response("A role that may not use DICOMweb (administrators), or a CSRF failure."),
    "404": _text_response("No such study, series, instance or frame within the caller's scope."),
}


def _param(name: str, schema: dict[str, Any], description: str, *, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "description": description, "schema": schema}


STRING = {"type": "string"}
STUDY_KEYS = [
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "AccessionNumber",
    "ModalitiesInStudy",
    "ReferringPhysicianName",
    "StudyDescription",
    "StudyInstanceUID",
    "StudyID",
]
SERIES_KEYS = ["Modality", "SeriesInstanceUID", "SeriesNumber", "SeriesDescription", "BodyPartExamined"]
INSTANCE_KEYS = ["SOPInstanceUID", "SOPClassUID", "InstanceNumber"]
QIDO_CONTROL = [
    _param("limit", {"type": "integer", "minimum": 0}, "At most this many results (0 or above 1000: 1000)."),
    _param("offset", {"type": "integer", "minimum": 0}, "Skip this many results."),
    _param(
        "includefield",
        {"type": "array", "items": STRING},
        "Attributes to add, by keyword or tag, or `all`.",
    ),
    _param("fuzzymatching", {"type": "boolean"}, "Not supported: true is answered with a Warning, literal matching."),
]


def _qido_parameters(keys: list[str]) -> list[dict[str, Any]]:
    matching = [_param(key, STRING, "Matching key: exact, `*`/`?` wildcards, date ranges, UID lists.") for key in keys]
    return QIDO_CONTROL + matching


RENDER_PARAMETERS = [
    _param("window", STRING, "center,width[,function]: function linear, linear-exact or sigmoid."),
    _param("viewport", STRING, "vw,vh[,sx,sy,sw,sh]: output size, and the source region."),
    _param("quality", {"type": "integer", "minimum": 1, "maximum": 100}, "JPEG quality."),
    _param("accept", STRING, "The media type wanted, preferred to the Accept header's (still required)."),
]
IMAGE = {
    "200": {
        "description": "The rendered image.",
        "content": {"image/jpeg": {"schema": BINARY}, "image/png": {"schema": BINARY}},
    },
    "406": _text_response("Neither JPEG nor PNG is acceptable."),
}
SEARCH = {
    "200": {
        "description": "The matches, in the DICOM JSON model.",
        "content": {DICOM_JSON: {"schema": {"type": "array", "items": DICOM_JSON_DATASET}}},
    },
    "204": {"description": "No match."},
    "406": _text_response("No Accept header (PS3.18 8.7.7), or none of its media types can be served."),
}
METADATA = {
    "200": {
        "description": "Every instance's attributes, bulk data as BulkDataURIs (or, for an Accept of "
        'multipart/related; type="application/dicom+xml", each instance as a PS3.19 NativeDicomModel part).',
        "content": {
            DICOM_JSON: {"schema": {"type": "array", "items": DICOM_JSON_DATASET}},
            MULTIPART: {"schema": BINARY},
        },
    },
    "406": _text_response("No Accept header (PS3.18 8.7.7), or none of its media types can be served."),
}
INSTANCES = {
    "200": {
        "description": 'The instances as parts of multipart/related; type="application/dicom" (one alone as '
        'application/dicom), or for an Accept of multipart/related; type="application/octet-stream" their bulk '
        "data (PS3.18 10.4.4): one part per BulkDataURI of their metadata, pixel data uncompressed.",
        "content": {MULTIPART: {"schema": BINARY}},
    },
    "406": _text_response("No Accept header (PS3.18 8.7.7), or the transfer syntax asked for cannot be served."),
}
STORE = {
    "requestBody": {
        "required": True,
        "description": 'Instances as parts of multipart/related; type="application/dicom".',
        "content": {MULTIPART: {"schema": BINARY}},
    },
    "responses": {
        "200": {"description": "Every instance stored.", "content": {DICOM_JSON: {"schema": DICOM_JSON_DATASET}}},
        "202": {"description": "Some stored, some not.", "content": {DICOM_JSON: {"schema": DICOM_JSON_DATASET}}},
        "409": {"description": "None stored.", "content": {DICOM_JSON: {"schema": DICOM_JSON_DATASET}}},
        "415": _text_response('Not multipart/related; type="application/dicom".'),
    },
    "description": "STOW-RS: technologists only, into their own facility.",
}


def _get(summary: str, responses: dict[str, Any], parameters: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"summary": summary, "responses": responses, "parameters": parameters or []}


# Each route of cloudpacs.dicomweb.urls, by URL name: its operations by method.
OPERATIONS: dict[str, dict[str, dict[str, Any]]] = {
    "studies": {
        "get": _get("QIDO-RS: search studies", SEARCH, _qido_parameters(STUDY_KEYS)),
        "post": {"summary": "STOW-RS: store instances", **STORE},
    },
    "series-search": {"get": _get("QIDO-RS: search series", SEARCH, _qido_parameters(STUDY_KEYS + SERIES_KEYS))},
    "instances-search": {
        "get": _get("QIDO-RS: search instances", SEARCH, _qido_parameters(STUDY_KEYS + SERIES_KEYS + INSTANCE_KEYS))
    },
    "wado-uri": {
        "get": _get(
            "WADO-URI: one instance, as DICOM or as an image",
            {
                "200": {
                    "description": "The instance (application/dicom) or a rendered image.",
                    "content": {
                        "application/dicom": {"schema": BINARY},
                        "image/jpeg": {"schema": BINARY},
                        "image/png": {"schema": BINARY},
                    },
                },
                "406": _text_response("The content type or transfer syntax asked for cannot be served."),
            },
            [
                _param("requestType", {"type": "string", "enum": ["WADO"]}, "Always WADO.", required=True),
                _param("studyUID", STRING, "Study Instance UID.", required=True),
                _param("seriesUID", STRING, "Series Instance UID.", required=True),
                _param("objectUID", STRING, "SOP Instance UID.", required=True),
                _param("contentType", STRING, "application/dicom, image/jpeg (default) or image/png."),
                _param("transferSyntax", STRING, "For application/dicom: the stored one or Explicit VR LE."),
                _param("rows", {"type": "integer"}, "Output height."),
                _param("columns", {"type": "integer"}, "Output width."),
                _param("windowCenter", STRING, "Window center."),
                _param("windowWidth", STRING, "Window width (positive)."),
                _param("imageQuality", {"type": "integer"}, "JPEG quality, clamped to 1..100."),
                _param("frameNumber", {"type": "integer"}, "Frame, from 1."),
            ],
        )
    },
    "study": {
        "get": _get("WADO-RS: retrieve a study", INSTANCES),
        "post": {"summary": "STOW-RS: store instances into this study", **STORE},
    },
    "study-metadata": {"get": _get("WADO-RS: a study's metadata", METADATA)},
    "study-thumbnail": {"get": _get("A study's thumbnail", IMAGE, RENDER_PARAMETERS)},
    "study-rendered": {
        "get": _get("WADO-RS: a study rendered (every image, or the representative one)", IMAGE, RENDER_PARAMETERS)
    },
    "study-series": {"get": _get("QIDO-RS: a study's series", SEARCH, _qido_parameters(SERIES_KEYS))},
    "study-instances": {
        "get": _get("QIDO-RS: a study's instances", SEARCH, _qido_parameters(SERIES_KEYS + INSTANCE_KEYS))
    },
    "series": {"get": _get("WADO-RS: retrieve a series", INSTANCES)},
    "series-metadata": {"get": _get("WADO-RS: a series' metadata", METADATA)},
    "series-thumbnail": {"get": _get("A series' thumbnail", IMAGE, RENDER_PARAMETERS)},
    "series-rendered": {
        "get": _get("WADO-RS: a series rendered (every image, or the representative one)", IMAGE, RENDER_PARAMETERS)
    },
    "series-instances": {"get": _get("QIDO-RS: a series' instances", SEARCH, _qido_parameters(INSTANCE_KEYS))},
    "instance": {"get": _get("WADO-RS: retrieve an instance", INSTANCES)},
    "instance-metadata": {"get": _get("WADO-RS: an instance's metadata", METADATA)},
    "instance-rendered": {"get": _get("WADO-RS: an instance rendered", IMAGE, RENDER_PARAMETERS)},
    "instance-thumbnail": {"get": _get("An instance's thumbnail", IMAGE, RENDER_PARAMETERS)},
    "bulkdata": {
        "get": _get(
            "WADO-RS: a bulk data value (the target of a BulkDataURI)",
            {
                "200": {
                    "description": "The value, as one part of multipart/related or as octets.",
                    "content": {MULTIPART: {"schema": BINARY}, "application/octet-stream": {"schema": BINARY}},
                },
                "406": _text_response("The media type asked for cannot be served."),
            },
        )
    },
    "series-frames": {
        "get": _get(
            "Every frame of several instances of a series (not PS3.18: the viewer's batched frames)",
            {
                "200": {
                    "description": "One part per frame, each with its frame's URL as Content-Location.",
                    "content": {MULTIPART: {"schema": BINARY}},
                },
                "400": _text_response("No instances, more than 64, a repeated one, or more than 256 frames."),
                "406": _text_response("The frames cannot be sent in the media type asked for."),
            },
            [_param("instances", STRING, "SOP Instance UIDs of the series, comma-separated.", required=True)],
        )
    },
    "frames": {
        "get": _get(
            "WADO-RS: frames, as stored",
            {
                "200": {"description": "One part per frame.", "content": {MULTIPART: {"schema": BINARY}}},
                "406": _text_response("The frames cannot be sent in the media type asked for."),
            },
        )
    },
    "frame-rendered": {"get": _get("WADO-RS: a frame rendered", IMAGE, RENDER_PARAMETERS)},
    "frame-thumbnail": {"get": _get("A frame's thumbnail", IMAGE, RENDER_PARAMETERS)},
}

PATH_PARAMETER = re.compile(r"<(?:(?P<converter>[^>:]+):)?(?P<name>[^>]+)>")
SECURITY: list[dict[str, list[str]]] = [{"tokenAuth": []}, {"bearerAuth": []}, {"cookieAuth": []}]
SECURITY_SCHEMES = {
    "tokenAuth": {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": (
            "`Token <key>`: an API token, made by its owner on the site's API tokens page"
            " (`/accounts/tokens/`) and shown once. It expires (at most API_TOKEN_MAX_DAYS days),"
            " is revoked by its owner there, by a password change and by deactivation, and either"
            " only reads or may also write (STOW-RS, the orders API); a read-only token's POST is 403."
        ),
    },
    "bearerAuth": {"type": "http", "scheme": "bearer", "description": "The same API token as `Bearer <key>`."},
    "cookieAuth": {
        "type": "apiKey",
        "in": "cookie",
        "name": "sessionid",
        "description": "The web session; writes also need the X-CSRFToken header.",
    },
}


def _path_and_parameters(prefix: str, pattern: URLPattern) -> tuple[str, list[dict[str, Any]]]:
    assert isinstance(pattern.pattern, RoutePattern)
    route = str(pattern.pattern)
    converters = pattern.pattern.converters
    parameters = []
    for match in PATH_PARAMETER.finditer(route):
        name = match["name"]
        regex = getattr(converters.get(name), "regex", "[^/]+")
        parameters.append(
            {"name": name, "in": "path", "required": True, "schema": {"type": "string", "pattern": f"^{regex}$"}}
        )
    return prefix + PATH_PARAMETER.sub(r"{\g<name>}", route), parameters


def dicomweb_paths(prefix: str = "/dicomweb/") -> dict[str, dict[str, Any]]:
    """The OpenAPI path items of every DICOMweb route."""
    paths: dict[str, dict[str, Any]] = {}
    for pattern in dicomweb_urls.urlpatterns:
        assert isinstance(pattern, URLPattern) and pattern.name is not None
        if pattern.name not in OPERATIONS:
            raise LookupError(f"the DICOMweb route {pattern.name!r} is not described in cloudpacs/openapi.py")
        path, path_parameters = _path_and_parameters(prefix, pattern)
        item: dict[str, Any] = {}
        for method, operation in OPERATIONS[pattern.name].items():
            item[method] = {
                "operationId": f"dicomweb_{pattern.name.replace('-', '_')}_{method}",
                "tags": ["DICOMweb"],
                "security": SECURITY,
                **operation,
                "parameters": path_parameters + operation.get("parameters", []),
                "responses": {**operation["responses"], **ERRORS},
            }
        paths[path] = item
    return paths


def add_dicomweb_paths(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """drf-spectacular postprocessing hook (SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"])."""
    result.setdefault("paths", {}).update(dicomweb_paths())
    components = result.setdefault("components", {})
    components.setdefault("securitySchemes", {}).update(SECURITY_SCHEMES)
    tags = result.setdefault("tags", [])
    tags.append(
        {"name": "DICOMweb", "description": "PS3.18 QIDO-RS, WADO-RS, STOW-RS and WADO-URI; see docs/dicomweb.md."}
    )
    return result


# Authenticated like the APIs it describes: a token (401 with a challenge without one) or
# the web session.
schema_view = SpectacularAPIView.as_view(
    authentication_classes=[TokenAuthentication, BearerAuthentication, SessionAuthentication],
    permission_classes=[IsAuthenticated],
)
