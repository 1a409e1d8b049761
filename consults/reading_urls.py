from django.urls import path

from consults import reading_views as views

app_name = "reading"

urlpatterns = [
    path("alerts/", views.alerts, name="alerts"),
    path("templates/", views.templates, name="templates"),
    path("phrases/", views.phrases, name="phrases"),
    path("phrases/delete/", views.delete_phrase, name="delete_phrase"),
    path("claim-next/", views.claim_next, name="claim_next"),
    path("critical/<uuid:finding_uuid>/acknowledge/", views.acknowledge, name="acknowledge"),
    path("<uuid:consult_uuid>/", views.reading_page, name="page"),
    path("<uuid:consult_uuid>/claim/", views.claim, name="claim"),
    path("<uuid:consult_uuid>/open/", views.open_, name="open"),
    path("<uuid:consult_uuid>/receive/", views.receive, name="receive"),
    path("<uuid:consult_uuid>/release/", views.release, name="release"),
    path("<uuid:consult_uuid>/reassign/", views.reassign, name="reassign"),
    path("<uuid:consult_uuid>/report/", views.save_report, name="report"),
    path("<uuid:consult_uuid>/addendum/", views.addendum, name="addendum"),
    path("<uuid:consult_uuid>/critical/", views.critical, name="critical"),
    path("<uuid:consult_uuid>/request/", views.correct_request, name="request"),
    path("<uuid:consult_uuid>/report.pdf", views.report_pdf, name="pdf"),
    path("<uuid:consult_uuid>/delivery/retry/", views.retry_delivery, name="retry_delivery"),
]
