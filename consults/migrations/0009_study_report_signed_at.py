# The archive reads Study.report_signed_at (set when a report is signed) to keep
# corrections of a signed study's images pending; fill it for reports signed before.

from django.db import migrations
from django.db.models import OuterRef, Subquery


def copy_signing_times(apps, schema_editor):
    Study = apps.get_model("cloudpacs", "Study")
    Consult = apps.get_model("consults", "Consult")
    signed = Consult.objects.filter(study=OuterRef("pk"), signed_at__isnull=False).values("signed_at")[:1]
    Study.objects.filter(consult__signed_at__isnull=False).update(report_signed_at=Subquery(signed))


class Migration(migrations.Migration):

    dependencies = [
        ("cloudpacs", "0008_ingest_identity"),
        ("consults", "0008_report_verification"),
    ]

    operations = [
        migrations.RunPython(copy_signing_times, migrations.RunPython.noop),
    ]
