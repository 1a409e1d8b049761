from django.urls import path

from consults import views

app_name = "consults"

urlpatterns = [
    path("worklist/", views.worklist, name="worklist"),
    path("facilities/<uuid:facility_uuid>/", views.facility_page, name="facility"),
    path("consults/<uuid:consult_uuid>/", views.consult_detail, name="detail"),
]
