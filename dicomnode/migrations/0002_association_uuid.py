# Each association log row gets a UUID of its own, so that an ingest conflict recorded
# while the association runs can name the row written when it ends.

import uuid

from django.db import migrations, models


def give_uuids(apps, schema_editor):
    AssociationLog = apps.get_model("dicomnode", "AssociationLog")
    for pk in AssociationLog.objects.filter(uuid__isnull=True).values_list("pk", flat=True).iterator():
        AssociationLog.objects.filter(pk=pk).update(uuid=uuid.uuid4())


class Migration(migrations.Migration):

    dependencies = [
        ("dicomnode", "0001_association_log"),
    ]

    operations = [
        migrations.AddField(
            model_name="associationlog",
            name="uuid",
            field=models.UUIDField(editable=False, null=True),
        ),
        migrations.RunPython(give_uuids, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="associationlog",
            name="uuid",
            field=models.UUIDField(default=uuid.uuid4, editable=False, unique=True, verbose_name="连接 UUID"),
        ),
    ]
