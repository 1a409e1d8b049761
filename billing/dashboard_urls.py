"""The dashboards, mounted under billing's URLs as the `billing:dashboards` namespace."""

from django.urls import path

from billing import dashboard_views as views

app_name = "dashboards"

urlpatterns = [
    path("savings/", views.savings, name="savings"),
    path("savings/<slug:table>.<slug:fmt>", views.savings_export, name="savings_export"),
    path("turnaround/", views.turnaround, name="turnaround"),
    path("turnaround/<slug:table>.<slug:fmt>", views.turnaround_export, name="turnaround_export"),
    path("volume/", views.volume, name="volume"),
    path("volume/<slug:kind>.<slug:fmt>", views.volume_export, name="volume_export"),
    path("exams/", views.exams, name="exams"),
]
