"""Indexes for QIDO-RS at scale: Patient ID across townships, the search's order
(newest first, in all townships and in one) and, on PostgreSQL, the person name groups as the search compares them
(UPPER(), and the ideographic group without its carets) with the pattern operator class,
so that 张三* or ZHANG* is an index range scan instead of a walk over every patient.
SQLite has no use for them (its LIKE is not indexed that way) and does not get them."""

from django.db import migrations, models

# (index name, indexed expression) on cloudpacs_patient; the expressions are exactly the
# ones cloudpacs.dicomweb.qido builds, or the planner would not match them.
NAME_INDEXES = [
    ("patient_name_alphabetic_upper", 'UPPER("name_alphabetic"::text)'),
    ("patient_name_ideographic_upper", 'UPPER("name_ideographic"::text)'),
    ("patient_name_ideographic_joined", "UPPER(REPLACE(\"name_ideographic\", '^', ''))"),
    ("patient_name_phonetic_upper", 'UPPER("name_phonetic"::text)'),
]


def create_name_indexes(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name, expression in NAME_INDEXES:
        schema_editor.execute(
            f'CREATE INDEX IF NOT EXISTS "{name}" ON "cloudpacs_patient" (({expression}) text_pattern_ops)'
        )


def drop_name_indexes(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name, _expression in NAME_INDEXES:
        schema_editor.execute(f'DROP INDEX IF EXISTS "{name}"')


class Migration(migrations.Migration):
    dependencies = [
        ("cloudpacs", "0002_instance_metadata"),
        ("facilities", "0001_initial"),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name="study",
            name="study_date",
        ),
        migrations.RemoveIndex(
            model_name="study",
            name="study_facility_date",
        ),
        migrations.AddIndex(
            model_name="patient",
            index=models.Index(fields=["patient_id"], name="patient_id_search", opclasses=["varchar_pattern_ops"]),
        ),
        migrations.AddIndex(
            model_name="study",
            index=models.Index(fields=["-study_date", "-study_time", "-id"], name="study_order"),
        ),
        migrations.AddIndex(
            model_name="study",
            index=models.Index(
                fields=["facility", "-study_date", "-study_time", "-id"], name="study_facility_order"
            ),
        ),
        migrations.RunPython(create_name_indexes, drop_name_indexes, elidable=False),
    ]
