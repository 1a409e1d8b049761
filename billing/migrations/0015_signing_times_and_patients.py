"""The rollup keeps what the workload, travel and time-limit pages read from the raw
consults and ledger until now: when each report was signed (Saturdays and Sundays counted,
weekdays as minutes of the day, so any night hours can be counted), the exams, signed and
within the limit of the emergency and urgent priorities, the exams billed (originals not
reversed), and the patients billed per township and month (BilledPatients). Rebuild the
rollup where there is one, as `manage.py rebuild_rollup` would, so that every stored row
has them."""

import django.db.models.deletion
from django.db import migrations, models


def rebuild(apps, schema_editor):
    daily = apps.get_model("billing", "DailyRollup")
    if not daily.objects.exists():
        return  # a new database: the rollup is built as consults arrive
    from billing import rollup

    rollup.rebuild()


def store_uncompressed(apps, schema_editor):
    """PostgreSQL: the keys are read whole and are hardly compressible (billing 0005)."""
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("ALTER TABLE billing_billedpatients ALTER COLUMN keys SET STORAGE EXTERNAL")


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0014_monthly_report"),
        ("consults", "0012_consult_change"),
    ]

    operations = [
        migrations.AddField(
            model_name="dailyrollup",
            name="billed",
            field=models.IntegerField(default=0),
        ),
        migrations.AddField(
            model_name="dailyrollup",
            name="signed_weekend",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="dailyrollup",
            name="weekday_signing",
            field=models.BinaryField(default=b""),
        ),
        migrations.AddField(
            model_name="monthlyrollup",
            name="billed",
            field=models.IntegerField(default=0),
        ),
        migrations.AddField(
            model_name="monthlyrollup",
            name="signed_weekend",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="monthlyrollup",
            name="weekday_signing",
            field=models.BinaryField(default=b""),
        ),
        migrations.AddField(
            model_name="monthlyreaderturnaround",
            name="signed_weekend",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="monthlyreaderturnaround",
            name="weekday_signing",
            field=models.BinaryField(default=b""),
        ),
        migrations.AddField(
            model_name="monthlytownshiprollup",
            name="billed",
            field=models.IntegerField(default=0),
        ),
        migrations.AddField(
            model_name="dailyrollup",
            name="emergency_exams",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="dailyrollup",
            name="emergency_signed",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="dailyrollup",
            name="emergency_within",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="dailyrollup",
            name="urgent_exams",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="dailyrollup",
            name="urgent_signed",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="dailyrollup",
            name="urgent_within",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="monthlyrollup",
            name="emergency_exams",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="monthlyrollup",
            name="emergency_signed",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="monthlyrollup",
            name="emergency_within",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="monthlyrollup",
            name="urgent_exams",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="monthlyrollup",
            name="urgent_signed",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="monthlyrollup",
            name="urgent_within",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="monthlytownshiprollup",
            name="within_limit",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="monthlytownshiprollup",
            name="emergency_exams",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="monthlytownshiprollup",
            name="emergency_signed",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="monthlytownshiprollup",
            name="emergency_within",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="monthlytownshiprollup",
            name="urgent_exams",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="monthlytownshiprollup",
            name="urgent_signed",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="monthlytownshiprollup",
            name="urgent_within",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.CreateModel(
            name="BilledPatients",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("month", models.DateField(blank=True, help_text="当月第一天；留空表示全部月份", null=True)),
                ("kind", models.CharField(blank=True, help_text="留空表示全部检查类型", max_length=4)),
                ("patients", models.PositiveIntegerField(default=0)),
                ("keys", models.BinaryField(default=b"")),
                (
                    "facility",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="+", to="facilities.facility"
                    ),
                ),
            ],
            options={
                "verbose_name": "看板乡镇患者汇总",
                "verbose_name_plural": "看板乡镇患者汇总",
                "constraints": [
                    models.UniqueConstraint(
                        condition=models.Q(("month__isnull", False)),
                        fields=("month", "facility", "kind"),
                        name="one_patient_set_a_month",
                    ),
                    models.UniqueConstraint(
                        condition=models.Q(("month__isnull", True)),
                        fields=("facility", "kind"),
                        name="one_patient_set_all_time",
                    ),
                ],
            },
        ),
        migrations.RunPython(store_uncompressed, migrations.RunPython.noop),
        migrations.RunPython(rebuild, migrations.RunPython.noop),
    ]
