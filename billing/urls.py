"""billing's URLs: the overview, and the dashboards as the `billing:dashboards` namespace."""

from django.urls import include, path

from billing.views import exams, monthly, overview, reports, savings, turnaround, volume

app_name = "billing"

dashboards = [
    path("savings/", savings.savings, name="savings"),
    path("savings/<slug:table>.<slug:fmt>", savings.savings_export, name="savings_export"),
    path("travel/", savings.travel, name="travel"),
    path("turnaround/", turnaround.turnaround, name="turnaround"),
    path("turnaround/<slug:table>.<slug:fmt>", turnaround.turnaround_export, name="turnaround_export"),
    path("volume/", volume.volume, name="volume"),
    path("volume/<slug:kind>.<slug:fmt>", volume.volume_export, name="volume_export"),
    path("exams/", exams.exams, name="exams"),
    path("monthly/", monthly.monthly_reports, name="monthly"),
    path("monthly/<uuid:report_uuid>.pdf", monthly.monthly_pdf, name="monthly_pdf"),
    path("growth/", reports.growth, name="growth"),
    path("growth/<slug:table>.<slug:fmt>", reports.growth_export, name="growth_export"),
    path("workload/", reports.workload, name="workload"),
    path("workload/<slug:table>.<slug:fmt>", reports.workload_export, name="workload_export"),
    path("timeliness/", reports.timeliness, name="timeliness"),
    path("timeliness/<slug:table>.<slug:fmt>", reports.timeliness_export, name="timeliness_export"),
]

urlpatterns = [
    path("dashboard/", overview.dashboard, name="dashboard"),
    path("dashboards/", include((dashboards, "dashboards"))),
]
