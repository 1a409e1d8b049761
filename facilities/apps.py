from django.apps import AppConfig


class FacilitiesConfig(AppConfig):
    name = "facilities"
    verbose_name = "机构与人员"

    def ready(self) -> None:
        from facilities import signals  # noqa: F401  (connects the login audit receivers)
