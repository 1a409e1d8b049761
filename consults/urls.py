from django.urls import path, re_path

from consults import views

app_name = "consults"

urlpatterns = [
    path("worklist/", views.worklist, name="worklist"),
    path("status/", views.platform_status, name="status"),
    path("facilities/<uuid:facility_uuid>/", views.facility_page, name="facility"),
    path("consults/<uuid:consult_uuid>/", views.consult_detail, name="detail"),
    re_path(r"^studies/(?P<study_uid>[0-9.]{1,64})/consult/$", views.request_consult, name="request"),
    # Public: the page a printed report's QR code opens.
    re_path(r"^verify/(?P<token>[A-Za-z0-9_-]{16,64})/$", views.verify_report, name="verify"),
]
