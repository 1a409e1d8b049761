from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "费用节省"
