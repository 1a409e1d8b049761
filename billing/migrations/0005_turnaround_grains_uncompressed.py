from django.db import migrations

TABLES = ("billing_monthlytownshipturnaround", "billing_monthlyreaderturnaround")


def store_uncompressed(apps, schema_editor):
    """PostgreSQL: the histograms of the per-township and per-radiologist months are read
    whole by every turnaround page; kept out of line but not compressed (STORAGE EXTERNAL),
    they are read without decompressing tens of megabytes. Existing rows are rewritten."""
    if schema_editor.connection.vendor != "postgresql":
        return
    for table in TABLES:
        schema_editor.execute(f"ALTER TABLE {table} ALTER COLUMN histograms SET STORAGE EXTERNAL")
        schema_editor.execute(f"UPDATE {table} SET histograms = histograms || ''::bytea")


class Migration(migrations.Migration):
    dependencies = [("billing", "0004_turnaround_grains")]

    operations = [migrations.RunPython(store_uncompressed, migrations.RunPython.noop)]
