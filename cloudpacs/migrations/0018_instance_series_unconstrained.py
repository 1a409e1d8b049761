"""An instance's series kept by the statements that write instances and by a trigger on
deleting a series, not by a foreign key.

The foreign key's check ran at every instance's commit: `SELECT 1 FROM cloudpacs_series
... FOR KEY SHARE`, a lock on the series' row written to the WAL, and with several
associations storing one series at once a MultiXact of the transactions holding it
(docs/benchmarks-ingest.md, runs 28 and 32). What it kept, that no instance names a series
that is not there, is kept now by:

- the statements that write an instance (cloudpacs.services): the one statement of a known
  series' instance looks the series up itself, and the transaction's insert takes the
  series' id from the series' row (NULL, refused, when it is gone); each reads the series
  in the snapshot of the statement that writes the instance;
- a trigger before a series' row is deleted, which first locks the instance table against
  writers (SHARE ROW EXCLUSIVE: every transaction that has written an instance has ended,
  and any that would write one now waits for this one to end), then refuses the deletion
  while an instance of the series is there. A statement waiting for that lock takes its
  snapshot after it, so it sees the series gone; one that came first is seen by the check.
  On SQLite, whose writers take turns, the check alone;
- a trigger refusing an instance's change to a series that is not there (no statement
  changes an instance's series).

The archive deletes no series today; Django's cascade (Series.delete(), a study's)
deletes the instances first and passes. A retention job should delete in short
transactions: the lock holds instances from being stored until the transaction ends."""

from django.db import migrations, models

POSTGRESQL = """
CREATE FUNCTION cloudpacs_series_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'a series is deleted at the read committed level only (its check reads what has committed)'
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    LOCK TABLE cloudpacs_instance IN SHARE ROW EXCLUSIVE MODE;
    IF EXISTS (SELECT 1 FROM cloudpacs_instance WHERE series_id = OLD.id) THEN
        RAISE EXCEPTION 'series % still has instances', OLD.id USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN OLD;
END
$$;
CREATE TRIGGER cloudpacs_series_deleted BEFORE DELETE ON cloudpacs_series
    FOR EACH ROW EXECUTE FUNCTION cloudpacs_series_deleted();
CREATE FUNCTION cloudpacs_instance_series_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM cloudpacs_series WHERE id = NEW.series_id) THEN
        RAISE EXCEPTION 'no series %', NEW.series_id USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER cloudpacs_instance_series_changed BEFORE UPDATE OF series_id ON cloudpacs_instance
    FOR EACH ROW WHEN (NEW.series_id IS DISTINCT FROM OLD.series_id)
    EXECUTE FUNCTION cloudpacs_instance_series_changed();
"""
POSTGRESQL_REVERSE = """
DROP TRIGGER cloudpacs_instance_series_changed ON cloudpacs_instance;
DROP FUNCTION cloudpacs_instance_series_changed();
DROP TRIGGER cloudpacs_series_deleted ON cloudpacs_series;
DROP FUNCTION cloudpacs_series_deleted();
"""
SQLITE = [
    """CREATE TRIGGER cloudpacs_series_deleted BEFORE DELETE ON cloudpacs_series FOR EACH ROW
    WHEN EXISTS (SELECT 1 FROM cloudpacs_instance WHERE series_id = OLD.id)
    BEGIN SELECT RAISE(ABORT, 'series still has instances'); END""",
    """CREATE TRIGGER cloudpacs_instance_series_changed BEFORE UPDATE OF series_id ON cloudpacs_instance
    FOR EACH ROW WHEN NOT EXISTS (SELECT 1 FROM cloudpacs_series WHERE id = NEW.series_id)
    BEGIN SELECT RAISE(ABORT, 'no such series'); END""",
]
SQLITE_REVERSE = [
    "DROP TRIGGER IF EXISTS cloudpacs_instance_series_changed",
    "DROP TRIGGER IF EXISTS cloudpacs_series_deleted",
]


def guard(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(POSTGRESQL, params=None)
    elif schema_editor.connection.vendor == "sqlite":
        for statement in SQLITE:
            schema_editor.execute(statement)


def unguard(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(POSTGRESQL_REVERSE, params=None)
    elif schema_editor.connection.vendor == "sqlite":
        for statement in SQLITE_REVERSE:
            schema_editor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [("cloudpacs", "0017_instance_counts_folded")]

    operations = [
        migrations.AlterField(
            model_name="instance",
            name="series",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                on_delete=models.deletion.CASCADE,
                related_name="instances",
                to="cloudpacs.series",
            ),
        ),
        # Reversed, the triggers go before the foreign key is back.
        migrations.RunPython(guard, unguard, elidable=False),
    ]
