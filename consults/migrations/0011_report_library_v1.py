"""Installs version 1 of the report-template library (consults.template_library.v1):
a normal report per exam kind and body part, in Chinese and English.

The six templates of 0003 give way to it where nobody changed them; one a hospital edited
stays as its own template, and every template without a library key is linked to the
body parts its label names, so that it is offered for them too."""

import importlib

from django.db import migrations

from consults import template_library
from consults.template_library import v1

# The texts 0003 installed, by name: a row still saying exactly this was never edited.
_0003 = importlib.import_module("consults.migrations.0003_builtin_report_templates")
REPLACED = {name: (findings, impression) for _, _, name, findings, impression in _0003.TEMPLATES}

# Labels of templates written before the library to the parts they stand for.
LABEL_PARTS = {
    "脊柱": ("CSPINE", "TSPINE", "LSPINE", "SSPINE"),
    "四肢": ("ARM", "ELBOW", "FOREARM", "WRIST", "HAND", "THIGH", "LEG", "ANKLE", "FOOT"),
    "骨盆": ("PELVIS",),
}


def install_v1(apps, schema_editor):
    report_template = apps.get_model("consults", "ReportTemplate")
    body_part = apps.get_model("cloudpacs", "BodyPart")
    for row in report_template.objects.filter(author=None, library_key="", name__in=list(REPLACED)):
        if (row.findings, row.impression) == REPLACED[row.name]:
            row.delete()
    template_library.install(report_template, body_part, v1.LIBRARY, v1.VERSION)

    parts = list(body_part.objects.all())
    for row in report_template.objects.filter(library_key="").prefetch_related("parts"):
        if row.parts.exists():
            continue
        label = row.body_part.strip()
        codes = LABEL_PARTS.get(label) or tuple(
            part.code for part in parts if label in (part.name_zh, part.code) or label.lower() == part.name_en.lower()
        )
        row.parts.set([part for part in parts if part.code in codes])


def remove_v1(apps, schema_editor):
    keys = [entry["key"] for entry in v1.LIBRARY]
    apps.get_model("consults", "ReportTemplate").objects.filter(library_key__in=keys).delete()
    _0003.add_templates(apps, schema_editor)


class Migration(migrations.Migration):
    dependencies = [("consults", "0010_report_library_and_phrases")]

    operations = [migrations.RunPython(install_v1, remove_v1)]
