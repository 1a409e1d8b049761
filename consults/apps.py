from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ConsultsConfig(AppConfig):
    name = "consults"
    verbose_name = _("远程会诊")

    def ready(self) -> None:
        # Fills consults.handoff's slots with the tasks (see there).
        from consults import tasks  # noqa: F401
