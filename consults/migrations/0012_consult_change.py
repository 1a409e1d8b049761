import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("consults", "0011_report_library_v1"),
        ("facilities", "0001_initial"),
    ]

    operations = [
        migrations.CreateModel(
            name="ConsultChange",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("exam_date", models.DateField()),
                ("change", models.CharField(max_length=16)),
                ("at", models.DateTimeField()),
                (
                    "consult",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="+", to="consults.consult"
                    ),
                ),
                (
                    "facility",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="+", to="facilities.facility"
                    ),
                ),
            ],
        ),
    ]
