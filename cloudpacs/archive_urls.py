"""Archive pages, keyed by the DICOM Study Instance UID (digits and dots, at most 64)."""

from django.urls import re_path

from cloudpacs import views

app_name = "cloudpacs"

urlpatterns = [
    re_path(r"^studies/(?P<study_uid>[0-9.]{1,64})/$", views.study_detail, name="study"),
]
