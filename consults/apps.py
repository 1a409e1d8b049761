from django.apps import AppConfig


class ConsultsConfig(AppConfig):
    name = "consults"
    verbose_name = "远程会诊"

    def ready(self) -> None:
        # Fills consults.handoff's slots with the tasks (see there).
        from consults import tasks  # noqa: F401
