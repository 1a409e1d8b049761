"""Index rows committed while their file's fsync was still under way
(cloudpacs.models.UnsyncedFile), so that a crash between the two is found at the next start."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("cloudpacs", "0013_metadata_in_tag_order")]

    operations = [
        migrations.CreateModel(
            name="UnsyncedFile",
            fields=[
                (
                    "instance",
                    models.OneToOneField(
                        db_constraint=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="+",
                        serialize=False,
                        to="cloudpacs.instance",
                    ),
                ),
            ],
            options={
                "verbose_name": "待同步的图像文件",
                "verbose_name_plural": "待同步的图像文件",
            },
        ),
    ]
