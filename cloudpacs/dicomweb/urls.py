"""DICOMweb routes (PS3.18): /dicomweb/studies... for QIDO-RS, WADO-RS and STOW-RS, and
/dicomweb/wado for WADO-URI. UIDs are digits and dots, at most 64 characters."""

from django.urls import path, register_converter

from cloudpacs.dicomweb import views

app_name = "dicomweb"


class UIDConverter:
    regex = r"[0-9][0-9.]{0,63}"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


class FrameListConverter:
    regex = r"[0-9]+(?:,[0-9]+)*"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


class TagConverter:
    regex = r"[0-9A-Fa-f]{8}"

    def to_python(self, value: str) -> str:
        return value.upper()

    def to_url(self, value: str) -> str:
        return value


register_converter(UIDConverter, "uid")
register_converter(FrameListConverter, "frames")
register_converter(TagConverter, "tag")

STUDY = "studies/<uid:study_uid>"
SERIES = f"{STUDY}/series/<uid:series_uid>"
INSTANCE = f"{SERIES}/instances/<uid:sop_uid>"
FRAMES = f"{INSTANCE}/frames/<frames:frame_list>"

urlpatterns = [
    path("studies", views.studies, name="studies"),
    path("series", views.all_series, name="series-search"),
    path("instances", views.all_instances, name="instances-search"),
    path("wado", views.wado_uri, name="wado-uri"),
    path(STUDY, views.study, name="study"),
    path(f"{STUDY}/metadata", views.study_metadata, name="study-metadata"),
    path(f"{STUDY}/rendered", views.study_rendered, name="study-rendered"),
    path(f"{STUDY}/thumbnail", views.study_thumbnail, name="study-thumbnail"),
    path(f"{STUDY}/series", views.study_series, name="study-series"),
    path(f"{STUDY}/instances", views.study_instances, name="study-instances"),
    path(SERIES, views.series, name="series"),
    path(f"{SERIES}/metadata", views.series_metadata, name="series-metadata"),
    path(f"{SERIES}/rendered", views.series_rendered, name="series-rendered"),
    path(f"{SERIES}/thumbnail", views.series_thumbnail, name="series-thumbnail"),
    path(f"{SERIES}/instances", views.series_instances, name="series-instances"),
    path(f"{SERIES}/frames", views.series_frames, name="series-frames"),
    path(INSTANCE, views.instance, name="instance"),
    path(f"{INSTANCE}/metadata", views.instance_metadata, name="instance-metadata"),
    path(f"{INSTANCE}/rendered", views.instance_rendered, name="instance-rendered"),
    path(f"{INSTANCE}/thumbnail", views.instance_thumbnail, name="instance-thumbnail"),
    path(f"{INSTANCE}/bulkdata/<tag:tag>", views.bulkdata, name="bulkdata"),
    path(FRAMES, views.frames, name="frames"),
    path(f"{FRAMES}/rendered", views.frame_rendered, name="frame-rendered"),
    path(f"{FRAMES}/thumbnail", views.frame_thumbnail, name="frame-thumbnail"),
]
