from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0011_turnaround_of_signed_consults"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="ledgerentry",
            index=models.Index(fields=["schedule", "exam_date"], name="ledger_schedule_date"),
        ),
        migrations.AddIndex(
            model_name="ledgerentry",
            index=models.Index(
                condition=models.Q(("parts_confirmed", False), ("reverses__isnull", True)),
                fields=["exam_date"],
                name="ledger_unconfirmed_date",
            ),
        ),
    ]
