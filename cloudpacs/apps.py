from django.apps import AppConfig


class CloudpacsConfig(AppConfig):
    name = "cloudpacs"
    verbose_name = "影像归档"
