"""The instance counters folded by the sweep instead of written by every instance.

Until now every instance's statement updated its series' and its study's rows (the
counters, the study's last arrival and status), and four associations storing one series
waited on those two rows, one commit after another (docs/benchmarks-ingest.md, run 28).
Now an instance's statement writes its own row only; the stability sweep folds the
instances received since its last fold into the stored counters, one update per series
and per study (cloudpacs.counts.fold), and readers add the instances after the series'
counted mark (Series.counted_through) through the (series, id) index that replaces the
series' own: the few instances of the last second, not the series.

The stored counters are exact now, so everything the archive holds is counted: the mark
and every series' counted_through start at the last instance's id."""

import django.db.models.deletion
from django.db import migrations, models
from django.db.models import Max


def counted_so_far(apps, schema_editor):  # type: ignore[no-untyped-def]
    instance = apps.get_model("cloudpacs", "Instance")
    through = instance.objects.aggregate(top=Max("pk"))["top"] or 0
    apps.get_model("cloudpacs", "InstanceCountMark").objects.create(pk=1, through=through)
    apps.get_model("cloudpacs", "Series").objects.update(counted_through=through)


class Migration(migrations.Migration):
    dependencies = [("cloudpacs", "0016_instance_without_pattern_indexes")]

    operations = [
        migrations.CreateModel(
            name="InstanceCountMark",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("through", models.BigIntegerField(default=0)),
            ],
            options={"verbose_name": "图像计数进度", "verbose_name_plural": "图像计数进度"},
        ),
        migrations.AddField(model_name="series", name="counted_through", field=models.BigIntegerField(default=0)),
        migrations.AddIndex(
            model_name="instance", index=models.Index(fields=["series", "id"], name="instance_series_order")
        ),
        migrations.AlterField(
            model_name="instance",
            name="series",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="instances",
                to="cloudpacs.series",
            ),
        ),
        migrations.RunPython(counted_so_far, migrations.RunPython.noop, elidable=False),
    ]
