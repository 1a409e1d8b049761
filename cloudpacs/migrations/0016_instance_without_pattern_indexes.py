"""The instance table's two pattern-matching indexes dropped (PostgreSQL only).

Django gives every unique or indexed CharField a second index on PostgreSQL, with the
varchar_pattern_ops operator class, for LIKE 'prefix%' outside the C locale. No query
matches an instance's SOP Instance UID or storage key by pattern (a UID is matched exactly
or from a list, PS3.4 C.2.2.2.2; storage keys by equality, IN and the orphan sweep's
`storage_key > after ORDER BY storage_key`, which the unique index serves), so they were
written for every received instance and read by nothing: two of the six index entries of
each instance's row, about 380 of its 1,755 bytes of WAL (docs/benchmarks-ingest.md run 28).
Django does not track these indexes in its model state: they go here by the name Django
gave them, and come back with it when the migration is reversed."""

from django.db import migrations

FIELDS = ("sop_instance_uid", "storage_key")


def drop_pattern_indexes(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor != "postgresql":
        return
    instance = apps.get_model("cloudpacs", "Instance")
    for name in FIELDS:
        column = instance._meta.get_field(name).column
        index = schema_editor._create_index_name(instance._meta.db_table, [column], suffix="_like")
        schema_editor.execute(f"DROP INDEX IF EXISTS {schema_editor.quote_name(index)}")


def restore_pattern_indexes(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor != "postgresql":
        return
    instance = apps.get_model("cloudpacs", "Instance")
    for name in FIELDS:
        schema_editor.execute(schema_editor._create_like_index_sql(instance, instance._meta.get_field(name)))


class Migration(migrations.Migration):
    dependencies = [("cloudpacs", "0015_study_arrival_off_the_indexes")]

    operations = [migrations.RunPython(drop_pattern_indexes, restore_pattern_indexes, elidable=False)]
