from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class FacilitiesConfig(AppConfig):
    name = "facilities"
    verbose_name = _("机构与人员")

    def ready(self) -> None:
        from facilities import signals  # noqa: F401  (connects the login audit receivers)
