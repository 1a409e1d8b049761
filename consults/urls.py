"""The consults app's URLs: its pages (namespace `consults`) and, mounted under
/reading/ by the project's urls, the reading pages (namespace `reading`)."""

from django.urls import path, re_path

from consults.views import oversight, reading
from consults.views import pages as views

app_name = "consults"

urlpatterns = [
    path("worklist/", views.worklist, name="worklist"),
    path("status/", views.platform_status, name="status"),
    path("consults/open/", oversight.open_consults, name="open_consults"),
    path("consults/open/reassign/", oversight.bulk_reassign, name="bulk_reassign"),
    path("facilities/<uuid:facility_uuid>/", views.facility_page, name="facility"),
    path("consults/<uuid:consult_uuid>/", views.consult_detail, name="detail"),
    re_path(r"^studies/(?P<study_uid>[0-9.]{1,64})/consult/$", views.request_consult, name="request"),
    # Public: the page a printed report's QR code opens.
    re_path(r"^verify/(?P<token>[A-Za-z0-9_-]{16,64})/$", views.verify_report, name="verify"),
]

reading_urlpatterns = [
    path("alerts/", reading.alerts, name="alerts"),
    path("templates/", reading.templates, name="templates"),
    path("phrases/", reading.phrases, name="phrases"),
    path("phrases/delete/", reading.delete_phrase, name="delete_phrase"),
    path("claim-next/", reading.claim_next, name="claim_next"),
    path("critical/<uuid:finding_uuid>/acknowledge/", reading.acknowledge, name="acknowledge"),
    path("<uuid:consult_uuid>/", reading.reading_page, name="page"),
    path("<uuid:consult_uuid>/claim/", reading.claim, name="claim"),
    path("<uuid:consult_uuid>/open/", reading.open_, name="open"),
    path("<uuid:consult_uuid>/receive/", reading.receive, name="receive"),
    path("<uuid:consult_uuid>/release/", reading.release, name="release"),
    path("<uuid:consult_uuid>/reassign/", reading.reassign, name="reassign"),
    path("<uuid:consult_uuid>/report/", reading.save_report, name="report"),
    path("<uuid:consult_uuid>/addendum/", reading.addendum, name="addendum"),
    path("<uuid:consult_uuid>/critical/", reading.critical, name="critical"),
    path("<uuid:consult_uuid>/request/", reading.correct_request, name="request"),
    path("<uuid:consult_uuid>/report.pdf", reading.report_pdf, name="pdf"),
    path("<uuid:consult_uuid>/delivery/retry/", reading.retry_delivery, name="retry_delivery"),
]
