"""Every consult gets its stored time limit (due_at): the one rule by which the workflow
escalates and the dashboards count a consult as signed within its limit.

Consults opened by the stability sweep used to get due_at only from the first periodic
check, so one signed before that had none. They get it now, from the configured limits
as the workflow computes it (head CT by the request's or the series' body parts)."""

from datetime import timedelta

from django.conf import settings
from django.db import migrations

_HEAD_WORDS = ("头", "颅", "脑", "HEAD", "BRAIN", "SKULL")
_DEFAULTS = {
    "emergency": {"DR": 30, "CT": 60, "CT_HEAD": 30},
    "urgent": {"DR": 60, "CT": 120, "CT_HEAD": 60},
    "routine": {"DR": 120, "CT": 240, "CT_HEAD": 240},
}


def fill_due_at(apps, schema_editor):
    consult_model = apps.get_model("consults", "Consult")
    series_model = apps.get_model("cloudpacs", "Series")
    configured = getattr(settings, "CONSULT_TIME_LIMITS", _DEFAULTS)
    table = {p: {**cells, **(configured.get(p) or {})} for p, cells in _DEFAULTS.items()}
    missing = consult_model.objects.filter(due_at__isnull=True).only(
        "pk", "priority", "kind", "arrived_at", "body_part_names", "study_id"
    )
    batch = []
    for consult in missing.iterator(chunk_size=2000):
        limits = table.get(consult.priority, table["routine"])
        key = consult.kind
        if consult.kind == "CT":
            names = [consult.body_part_names]
            if consult.study_id is not None:
                names += list(
                    series_model.objects.filter(study_id=consult.study_id).values_list("body_part_examined", flat=True)
                )
            text = " ".join(n for n in names if n).upper()
            if any(word in text for word in _HEAD_WORDS):
                key = "CT_HEAD"
        consult.due_at = consult.arrived_at + timedelta(minutes=limits.get(key, limits.get(consult.kind, 240)))
        batch.append(consult)
        if len(batch) >= 2000:
            consult_model.objects.bulk_update(batch, ["due_at"])
            batch = []
    if batch:
        consult_model.objects.bulk_update(batch, ["due_at"])


class Migration(migrations.Migration):
    dependencies = [
        ("cloudpacs", "0001_initial"),
        ("consults", "0006_notification_outbox"),
    ]

    operations = [migrations.RunPython(fill_due_at, migrations.RunPython.noop)]
