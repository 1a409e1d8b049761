"""Index rows and WADO-RS metadata of studies in GB 2312 with code extensions
(Specific Character Set `\\ISO 2022 IR 58`) written before cloudpacs.charsets corrected
pydicom's decoding: their text values (Study Description, Institution Name, Referring
Physician's Name, Series Description...) kept the escape sequence ESC $ ) A. The
characters after it were decoded right, so removing the sequences mends the rows; the
stored metadata documents of those studies are dropped and computed again, from the
files, on their next request (cloudpacs.services.instances_metadata)."""

from typing import Any

from django.db import migrations
from django.db.models import F, Value
from django.db.models.functions import Replace

ESCAPE_SEQUENCES = ("\x1b$)A", "\x1b(B")
IR58 = "2022 IR 58"
STUDY_FIELDS = ("description", "referring_physician", "institution_name", "station_name", "patient_name_received")
SERIES_FIELDS = ("description", "body_part_examined", "station_name", "institution_name", "manufacturer")


def _without_escapes(field: str) -> Any:
    expression: Any = F(field)
    for sequence in ESCAPE_SEQUENCES:
        expression = Replace(expression, Value(sequence), Value(""))
    return expression


def mend_text(apps: Any, schema_editor: Any) -> None:
    Study = apps.get_model("cloudpacs", "Study")
    Series = apps.get_model("cloudpacs", "Series")
    InstanceMetadata = apps.get_model("cloudpacs", "InstanceMetadata")
    studies = Study.objects.filter(specific_character_set__contains=IR58)
    studies.update(**{field: _without_escapes(field) for field in STUDY_FIELDS})
    Series.objects.filter(study__in=studies.values("pk")).update(
        **{field: _without_escapes(field) for field in SERIES_FIELDS}
    )
    InstanceMetadata.objects.filter(instance__series__study__in=studies.values("pk")).delete()


class Migration(migrations.Migration):
    dependencies = [("cloudpacs", "0009_patient_identifiers")]

    operations = [migrations.RunPython(mend_text, migrations.RunPython.noop)]
