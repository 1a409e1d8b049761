"""The study's last_received_at, written by every instance, taken off the indexes so that
PostgreSQL updates the study's row in place (HOT) instead of adding a row version to each of
the table's indexes per instance. The stability sweep finds its candidates through a partial
index of the studies still receiving; a township's page walks its studies by first arrival,
which is written once per study."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("cloudpacs", "0014_unsynced_file"),
        ("facilities", "0007_facility_name_en"),
    ]

    operations = [
        migrations.RemoveIndex(model_name="study", name="study_stability"),
        migrations.AlterField(
            model_name="study",
            name="last_received_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddIndex(
            model_name="study",
            index=models.Index(condition=models.Q(("status", "receiving")), fields=["id"], name="study_receiving"),
        ),
        migrations.AddIndex(
            model_name="study",
            index=models.Index(fields=["facility", "-first_received_at", "-id"], name="study_facility_arrival"),
        ),
    ]
