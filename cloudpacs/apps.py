from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class CloudpacsConfig(AppConfig):
    name = "cloudpacs"
    verbose_name = _("影像归档")

    def ready(self) -> None:
        # pydicom's ISO 2022 IR 58 (GB 2312 with code extensions) leaves escape sequences
        # in decoded text and writes none: corrected for every process (cloudpacs.charsets).
        from cloudpacs import charsets

        charsets.install()
