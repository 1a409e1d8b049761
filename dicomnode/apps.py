from django.apps import AppConfig


class DicomnodeConfig(AppConfig):
    name = "dicomnode"
    verbose_name = "DICOM 接收"
