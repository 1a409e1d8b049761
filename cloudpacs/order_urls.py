"""The township's register of exams, and its JSON API for a hospital information system."""

from django.urls import path

from cloudpacs import api, order_views

app_name = "orders"

urlpatterns = [
    path("orders/", order_views.order_list, name="list"),
    path("orders/<uuid:order_uuid>/cancel/", order_views.cancel, name="cancel"),
    path("orders/<uuid:order_uuid>/confirm/", order_views.confirm, name="confirm"),
    path("orders/<uuid:order_uuid>/reject/", order_views.reject, name="reject"),
    path("api/orders/", api.OrderListView.as_view(), name="api-list"),
    path("api/orders/<uuid:order_uuid>/", api.OrderDetailView.as_view(), name="api-detail"),
    path("api/orders/<uuid:order_uuid>/cancel/", api.OrderCancelView.as_view(), name="api-cancel"),
    path("api/body-parts/", api.BodyPartListView.as_view(), name="api-body-parts"),
]
