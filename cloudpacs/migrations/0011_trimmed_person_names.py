"""Person names indexed with trailing empty components (`Zhou^Li^^^=周^丽^^^`, a
referring physician of `^^^^`), as some consoles pad them, are kept without them, as
cloudpacs.services.person_name_groups now indexes names: an exact QIDO-RS or C-FIND
query for `Zhou^Li` found no `Zhou^Li^^^` (PS3.5 6.2.1.1 makes them the same name)."""

from typing import Any

from django.db import migrations
from django.db.models import Q


def _trimmed(whole: str) -> str:
    return "=".join(group.rstrip("^ ") for group in whole.split("=")).rstrip("=")


def _padded(field: str) -> Q:
    return Q(**{f"{field}__endswith": "^"}) | Q(**{f"{field}__contains": "^="})


def trim_names(apps: Any, schema_editor: Any) -> None:
    Patient = apps.get_model("cloudpacs", "Patient")
    Study = apps.get_model("cloudpacs", "Study")
    groups = ("name_alphabetic", "name_ideographic", "name_phonetic")
    padded = _padded("name")
    for field in groups:
        padded |= Q(**{f"{field}__endswith": "^"})
    for patient in Patient.objects.filter(padded).only("pk", "name", *groups).iterator():
        Patient.objects.filter(pk=patient.pk).update(
            name=_trimmed(patient.name), **{field: getattr(patient, field).rstrip("^ ") for field in groups}
        )
    wholes = ("referring_physician", "patient_name_received")
    for study in Study.objects.filter(_padded(wholes[0]) | _padded(wholes[1])).only("pk", *wholes).iterator():
        Study.objects.filter(pk=study.pk).update(**{field: _trimmed(getattr(study, field)) for field in wholes})


class Migration(migrations.Migration):
    dependencies = [("cloudpacs", "0010_iso2022_ir58_text")]

    operations = [migrations.RunPython(trim_names, migrations.RunPython.noop)]
