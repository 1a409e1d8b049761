from django.urls import include, path

from billing import views

app_name = "billing"

urlpatterns = [
    path("dashboard/", views.dashboard, name="dashboard"),
    path("dashboards/", include("billing.dashboard_urls")),
]
