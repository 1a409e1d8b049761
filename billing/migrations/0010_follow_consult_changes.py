"""The rollup followed the consults' audit trail past a cursor (RollupCursor
"consults-audit"); it now follows consults' change feed (consults.ConsultChange). The
events the cursor had not reached yet become changes of the feed, one per consult, so the
next run refreshes their days as the old one would have; then the cursor goes. The audit
trail itself is untouched."""

from django.db import migrations
from django.utils import timezone

CURSOR = "consults-audit"
BATCH = 2000


def to_change_feed(apps, schema_editor):
    cursor = apps.get_model("billing", "RollupCursor")
    event = apps.get_model("facilities", "AuditEvent")
    consult = apps.get_model("consults", "Consult")
    change = apps.get_model("consults", "ConsultChange")
    found = cursor.objects.filter(name=CURSOR).first()
    if found is None and not consult.objects.exists():
        return  # a new database: nothing was ever followed
    # Without a cursor the old task would have read every event: so does this.
    last = found.last_event_id if found is not None else 0
    uuids = sorted(
        set(event.objects.filter(pk__gt=last, object_type="consults.consult").values_list("object_id", flat=True))
    )
    now = timezone.now()
    for start in range(0, len(uuids), BATCH):
        rows = consult.objects.filter(uuid__in=uuids[start : start + BATCH]).values_list(
            "pk", "facility_id", "exam_date"
        )
        change.objects.bulk_create(
            change(consult_id=pk, facility_id=facility, exam_date=day, change="migrated", at=now)
            for pk, facility, day in rows
        )
    cursor.objects.filter(name=CURSOR).delete()


def to_cursor(apps, schema_editor):
    """Back: the cursor at the latest event, the feed's changes left to the rollup's
    rebuild (`manage.py rebuild_rollup`), as after billing 0007."""
    cursor = apps.get_model("billing", "RollupCursor")
    event = apps.get_model("facilities", "AuditEvent")
    last = event.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    cursor.objects.update_or_create(name=CURSOR, defaults={"last_event_id": last})


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0009_ledger_parts_confirmed"),
        ("consults", "0012_consult_change"),
        ("facilities", "0005_application_entities"),
    ]

    operations = [migrations.RunPython(to_change_feed, to_cursor)]
