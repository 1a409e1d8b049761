"""The standalone viewer page, keyed by the DICOM Study Instance UID."""

from django.urls import re_path

from cloudpacs import viewer_views

app_name = "viewer"

urlpatterns = [
    re_path(rf"^viewer/(?P<study_uid>{viewer_views.UID_PATTERN})/$", viewer_views.viewer, name="study"),
]
