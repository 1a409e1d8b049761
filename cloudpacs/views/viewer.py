"""The diagnostic viewer page: one study (and, if asked, a prior of the same patient) in
the Cornerstone3D viewer built from frontend/ into static/viewer/. The images themselves
come over DICOMweb; this page only authorizes, names the study and lists its priors."""

from __future__ import annotations

import base64
import json
from typing import Any

from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils.translation import get_language
from django.views.decorators.http import require_GET, require_POST

from cloudpacs.descriptions import description_in
from cloudpacs.forms import ReadingMarksForm, ViewerForm
from cloudpacs.models import Series, Study
from cloudpacs.services import (
    MarksRefused,
    first_image,
    image_series,
    reading_marks,
    same_patient_studies,
    save_reading_marks,
    stand_in_picture,
)
from facilities.access import RADIOLOGIST, TECHNOLOGIST, role_required, studies_for, study_or_404
from facilities.models import Facility
from facilities.services import audit

# The server-rendered stand-in for the first image: at the image's own size, never
# enlarged (the browser scales it to the pane), and at most this many pixels a side, so
# that a 3000 x 3000 DX costs a 1024 x 1024 JPEG.
STAND_IN_SIDE = 1024


def stand_in_size(first: dict[str, Any] | None) -> tuple[int, int] | None:
    """The stand-in's (width, height): the first image's own up to STAND_IN_SIDE a side;
    a larger image's divided by the smallest whole number that brings it to STAND_IN_SIDE
    or under, so that the server renders it by averaging whole blocks of pixels with no
    resampling left after (a 2736 x 2736 DX: 912 x 912 from 3 x 3 blocks, where 1024 x 1024
    was 2 x 2 blocks resampled again, about 60 % more CPU time); None when the index does
    not know the image's size."""
    reduction = _stand_in_reduction(first)
    return reduction[:2] if reduction else None


def _stand_in_reduction(first: dict[str, Any] | None) -> tuple[int, int, int] | None:
    """(width, height, factor) of the stand-in: the first image divided by factor."""
    if not first or not first.get("rows") or not first.get("columns"):
        return None
    rows, columns = int(first["rows"]), int(first["columns"])
    factor = -(-max(rows, columns) // STAND_IN_SIDE)
    return max(1, columns // factor), max(1, rows // factor), factor


def stand_in_url(study: Study, first: dict[str, Any] | None) -> str:
    """The /rendered URL of the first image's stand-in, fixed by the server so that the
    page's head can ask for it (<link rel="preload">) before any script runs or the pane
    has a size; "" when the index does not know the image's size (the page's script then
    asks at the pane's size once it has one)."""
    reduction = _stand_in_reduction(first)
    if first is None or reduction is None:
        return ""
    width, height, factor = reduction
    path = reverse("dicomweb:instance-rendered", args=[study.study_uid, first["series_uid"], first["sop_instance_uid"]])
    viewport = f"{width},{height}"
    if (width * factor, height * factor) != (int(first["columns"]), int(first["rows"])):
        # The source region that divides exactly (PS3.18 8.3.5.1.3's six-value viewport): the
        # few rows or columns past it are the ones whole blocks leave out anyway.
        viewport += f",0,0,{width * factor},{height * factor}"
    return f"{path}?accept=image/jpeg&viewport={viewport}"


def stand_in_first(first: dict[str, Any] | None) -> bool:
    """Whether the viewer's code should run only once the stand-in is painted: when the
    server renders it quickly, an image of at most STAND_IN_SIDE x STAND_IN_SIDE pixels
    (CT, MR, ultrasound). Running the code is one long task of the page's main thread
    (about 0.3 s cold here), during which no frame is painted; begun first, it held the
    stand-in back. A large image (a 15 MB DX) takes the server longer to render than the
    browser takes to fetch and compile the code, so Cornerstone is not kept waiting for it."""
    if not first or not first.get("rows") or not first.get("columns"):
        return False
    return int(first["rows"]) * int(first["columns"]) <= STAND_IN_SIDE * STAND_IN_SIDE


def shown_descriptions(study: Study, priors: QuerySet[Study]) -> dict[str, str]:
    """{a study or series description of `study` or its `priors` as the console wrote it:
    as the page's language shows it} for those that read otherwise (cloudpacs.descriptions),
    and the institution's name where the console wrote the facility's Chinese name; none on
    a Chinese page. The viewer reads these from the images' DICOM, in the console's words;
    it shows them as the lists do."""
    if not (get_language() or "").lower().startswith("en"):
        return {}
    studies = Study.objects.filter(pk__in=[study.pk, *priors.values_list("pk", flat=True)])
    texts = set(studies.values_list("description", flat=True))
    series = list(Series.objects.filter(study__in=studies).values_list("description", "institution_name"))
    texts |= {description for description, _institution in series}
    shown = {text: english for text in texts if text and (english := description_in(text)) != text}
    institutions = {institution for _description, institution in series}
    for facility in Facility.objects.filter(studies__in=studies).distinct():
        if facility.name in institutions and facility.name_in() != facility.name:
            shown[facility.name] = facility.name_in()
    return shown


def stand_in_data_url(first: dict[str, Any] | None) -> str:
    """The first image's stand-in itself, as a data: URL for the page's markup, when the
    server renders it quickly (stand_in_first: at most 1024 x 1024 pixels, a few
    milliseconds); "" for a larger image, an image of unknown size, or one that cannot be
    rendered now, whose stand-in the page asks for by its URL (stand_in_url).

    In the page, the stand-in comes with the page's own bytes: it is painted in the page's
    first frame, with no request of its own to wait for. Asked for by URL, it was a second
    round trip, begun only once the page's head was read and served beside the six other
    requests the head starts (the viewer's code, its chunks, the page's scripts)."""
    size = stand_in_size(first)
    if first is None or size is None or not stand_in_first(first):
        return ""
    picture = stand_in_picture(first, size)
    return "data:image/jpeg;base64," + base64.b64encode(picture).decode("ascii") if picture else ""


def viewer_context(study: Study, user: Any, prior_uid: str = "", *, picture: bool = False) -> dict[str, Any]:
    """What templates/cloudpacs/_viewer_embed.html needs beside `study`: the study's
    series, the user's other studies of the same patient, the prior to open, the first
    image, its stand-in's URL (which _viewer_assets.html preloads) and size, with
    `picture` the stand-in itself when the server renders it quickly (stand_in_data_url,
    then neither preloaded nor asked for), whether the viewer's code waits for the
    stand-in (stand_in_first) and the descriptions in the page's language
    (shown_descriptions, as JSON).

    The reporting page may call this to offer the same prior selector; without it the
    partial still shows the study, with no prior pane."""
    # The same rule as the study page and /dicomweb/: facility-scoped, and for radiologists
    # the studies sent for reading; a prior the images could not be fetched for is not offered.
    # The patient's other studies by the identity rules (cloudpacs.services.same_patient_studies).
    visible = studies_for(user)
    priors = visible.filter(pk__in=same_patient_studies(study).values("pk")).order_by("-study_date", "-study_time")
    prior = None
    if prior_uid:
        prior = get_object_or_404(visible, study_uid=prior_uid)
    # A list, read once: the page lists the series and names the first one's first image.
    series = list(image_series(study))
    first = first_image(series[0] if series else None)
    return {
        "viewer_series": series,
        "viewer_priors": priors,
        "prior_study": prior,
        "viewer_first_instance": first,
        "viewer_stand_in_url": stand_in_url(study, first),
        "viewer_stand_in_data_url": stand_in_data_url(first) if picture else "",
        "viewer_stand_in_size": stand_in_size(first),
        "viewer_stand_in_first": stand_in_first(first),
        "viewer_descriptions": json.dumps(shown_descriptions(study, priors), ensure_ascii=False),
    }


@role_required(RADIOLOGIST, TECHNOLOGIST)
def viewer(request: HttpRequest, study_uid: str) -> HttpResponse:
    study = study_or_404(request, study_uid)
    form = ViewerForm(request.GET)
    if not form.is_valid():
        raise Http404
    prior_uid = form.cleaned_data["prior"]
    if prior_uid and prior_uid != study_uid:
        # A prior the user may not open is refused (and audited) like the study itself.
        study_or_404(request, prior_uid)
    # The stand-in's picture in the page: the study's own first image, covered by the access
    # check above and the audit entry below, as every view of the page is.
    context = viewer_context(study, request.user, prior_uid if prior_uid != study_uid else "", picture=True)
    audit("cloudpacs.study.viewed", request=request, obj=study, via="viewer")
    return render(request, "cloudpacs/viewer.html", {"study": study, "patient": study.patient, **context})


@role_required(RADIOLOGIST, TECHNOLOGIST)
@require_GET
def marks(request: HttpRequest, study_uid: str) -> JsonResponse:
    """The study's current key images and measurements (cloudpacs.services.reading_marks),
    which the viewer shows again when the study is opened."""
    study = study_or_404(request, study_uid)
    return JsonResponse(reading_marks(study))


@role_required(RADIOLOGIST)
@require_POST
def save_marks(request: HttpRequest, study_uid: str) -> JsonResponse:
    """Keep the reader's key images and measurements in the study, as a KOS and a GSPS."""
    study = study_or_404(request, study_uid)
    form = ReadingMarksForm(request.POST)
    if not form.is_valid():
        errors = [str(message) for messages in form.errors.values() for message in messages]
        return JsonResponse({"error": " ".join(errors)}, status=400)
    try:
        saved = save_reading_marks(
            study,
            request.user,  # type: ignore[arg-type]
            form.cleaned_data["key_images"],
            form.cleaned_data["measurements"],
        )
    except MarksRefused as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    return JsonResponse({"kos": saved.kos_uid, "gsps": saved.gsps_uid, **reading_marks(study)})
