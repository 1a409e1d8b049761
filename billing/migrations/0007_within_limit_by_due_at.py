"""The rollup's `within_limit` counted a consult's time against the dashboards' own table
of limits; it now counts the consults signed by their stored due_at (the workflow's one
time-limit rule). Rebuild the rollup from that rule where there is one to rebuild: what
`manage.py rebuild_rollup` does, run once here so no stored figure keeps the old rule."""

from django.db import migrations


def rebuild(apps, schema_editor):
    daily = apps.get_model("billing", "DailyRollup")
    if not daily.objects.exists():
        return  # a new database: the rollup is built as consults arrive
    from billing import rollup

    # (It also moved the audit-trail cursor the rollup then followed to the latest event;
    # billing 0010 replaced that cursor with consults' change feed.)
    rollup.rebuild()


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0006_chinese_labels"),
        ("consults", "0007_fill_due_at"),
    ]

    operations = [migrations.RunPython(rebuild, migrations.RunPython.noop)]
