"""The project's URLs. Each app keeps its own pages in its urls module."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from cloudpacs import openapi
from facilities import views as facilities_views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("dicomweb/", include("cloudpacs.dicomweb.urls")),
    path("api/schema/", openapi.schema_view, name="openapi-schema"),
    path("i18n/", include("django.conf.urls.i18n")),
    path("accounts/login/", facilities_views.login, name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", include("facilities.urls")),
    path("", include("cloudpacs.archive_urls")),
    path("", include("cloudpacs.order_urls")),
    path("", include("cloudpacs.viewer_urls")),
    path("", include("consults.urls")),
    path("reading/", include("consults.reading_urls")),
    path("", include("billing.urls")),
]
