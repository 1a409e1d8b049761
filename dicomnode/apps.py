from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class DicomnodeConfig(AppConfig):
    name = "dicomnode"
    verbose_name = _("DICOM 接收")
