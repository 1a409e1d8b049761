"""The project's URLs, and the archive's own pages: a study (namespace `cloudpacs`, keyed
by the DICOM Study Instance UID, digits and dots, at most 64), the township's register of
exams with its JSON API for a hospital information system (`orders`), and the standalone
viewer (`viewer`). Each other app keeps its pages in its urls module."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, re_path

from cloudpacs import api, openapi
from cloudpacs.forms import UID_PATTERN
from cloudpacs.views import archive, orders, viewer
from consults import urls as consults_urls
from facilities import views as facilities_views

archive_urlpatterns = [
    re_path(r"^studies/(?P<study_uid>[0-9.]{1,64})/$", archive.study_detail, name="study"),
]

order_urlpatterns = [
    path("orders/", orders.order_list, name="list"),
    path("orders/<uuid:order_uuid>/cancel/", orders.cancel, name="cancel"),
    path("orders/<uuid:order_uuid>/confirm/", orders.confirm, name="confirm"),
    path("orders/<uuid:order_uuid>/reject/", orders.reject, name="reject"),
    path("api/orders/", api.OrderListView.as_view(), name="api-list"),
    path("api/orders/<uuid:order_uuid>/", api.OrderDetailView.as_view(), name="api-detail"),
    path("api/orders/<uuid:order_uuid>/cancel/", api.OrderCancelView.as_view(), name="api-cancel"),
    path("api/body-parts/", api.BodyPartListView.as_view(), name="api-body-parts"),
]

viewer_urlpatterns = [
    re_path(rf"^viewer/(?P<study_uid>{UID_PATTERN})/$", viewer.viewer, name="study"),
    re_path(rf"^viewer/(?P<study_uid>{UID_PATTERN})/marks/$", viewer.marks, name="marks"),
    re_path(rf"^viewer/(?P<study_uid>{UID_PATTERN})/marks/save/$", viewer.save_marks, name="save_marks"),
]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("dicomweb/", include("cloudpacs.dicomweb.urls")),
    path("api/schema/", openapi.schema_view, name="openapi-schema"),
    path("i18n/", include("django.conf.urls.i18n")),
    path("accounts/login/", facilities_views.login, name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", include("facilities.urls")),
    path("", include((archive_urlpatterns, "cloudpacs"))),
    path("", include((order_urlpatterns, "orders"))),
    path("", include((viewer_urlpatterns, "viewer"))),
    path("", include("consults.urls")),
    path("reading/", include((consults_urls.reading_urlpatterns, "reading"))),
    path("", include("billing.urls")),
]
