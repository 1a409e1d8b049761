"""The rollup's turnaround figures (each stage's count, sums and histogram) counted the
stages of consults assigned or opened but not yet signed wherever such a consult shared a
rollup row with a signed one; the turnaround is of signed consults only, as the raw
figures are (found by tests/test_consult_changes.py, which holds the followed rollup to
them). Recompute the days that have such a consult."""

from django.db import migrations


def refresh(apps, schema_editor):
    daily = apps.get_model("billing", "DailyRollup")
    if not daily.objects.exists():
        return  # a new database: the rollup is built as consults arrive
    consult = apps.get_model("consults", "Consult")
    days = (
        consult.objects.filter(signed_at__isnull=True, assigned_at__isnull=False)
        .exclude(status="cancelled")
        .values_list("exam_date", "facility_id")
        .distinct()
        .order_by()
    )
    from billing import rollup

    rollup.refresh_days(list(days))


class Migration(migrations.Migration):
    dependencies = [("billing", "0010_follow_consult_changes")]

    operations = [migrations.RunPython(refresh, migrations.RunPython.noop)]
