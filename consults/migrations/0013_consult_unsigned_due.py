from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("consults", "0012_consult_change"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="consult",
            index=models.Index(
                condition=models.Q(("signed_at__isnull", True)), fields=["due_at"], name="consult_unsigned_due"
            ),
        ),
    ]
