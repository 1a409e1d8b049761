"""The archive's instance counters: folded by the sweep, completed by whoever reads them.

An instance's statement writes its own row and no other (cloudpacs.services._index): four
associations storing one series no longer wait on its series' and study's rows, one
commit after another. The stored counters (Series.number_of_instances,
Study.number_of_instances) count the instances up to a mark; `fold`, which the stability
sweep runs once a second, counts the instances received since into them, one update per
series and per study, and moves the study's last arrival and the status of a late
instance (an arrived study becomes updated) with them. A reader adds the instances after
the series' mark (Series.counted_through), in the statement that reads the stored counter:
a range of the instance table's (series, id) index, the few instances of the last second,
so that a console that stores and then asks (C-FIND, QIDO-RS) sees its instance counted
before any fold.

Most of the time nothing is left to add: the archive is idle, or the sweep has just
folded. A reader that reads its rows `with_counted` asks so in the same statement, for
the cost of two index lookups (the highest instance id, the end of the primary key's
index; the mark's row): whether no instance is above InstanceCountMark.through. When
none is, the stored counters that statement reads are exact and nothing is probed; only
otherwise does the reader count the instances above the mark (exact_by_series,
exact_by_study): it reads them from the end of the primary key's index, a second's
instances or so, up to a few for each series or study it asks about; above that (the sweep
stopped or held back) it probes each of its series after the series' mark instead, and
answers the same exact counts at the cost of its own series, not of the backlog.

Why one statement. Every instance with an id up to the mark is folded, and none can
still be committed: a fold counts up to an id only once no lower id can commit any more
(PostgreSQL: _writers_done; SQLite: its writers take turns), and it moves the mark in
the transaction that moves the counters. So in one snapshot, "no instance above the
mark" means every instance the snapshot sees is in the stored counters the snapshot
shows. Read in two statements the gate could be stale: an instance unfolded when the
rows were read and folded before the gate's statement (the gate then finds nothing
above the mark) would be counted by neither, though its Success came before the reader
asked. A fold or an insert committing while the one statement runs is not in its
snapshot at all: the insert's Success comes after the reader began, and a fold only
moves instances between the counters and the part above the mark. When the gate does not
hold, exact_by_series and exact_by_study read the counters and the instances above the
mark in one statement of their own: a snapshot later than the rows', whose counts include
every instance acknowledged before the reader asked.

A study's number of series is still written when a series is created (once per series,
in the transaction that creates it)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, MutableMapping
from datetime import datetime
from typing import Any, TypeVar

from django.db import connection, transaction
from django.db.models import (
    BooleanField,
    Case,
    Count,
    Exists,
    F,
    Max,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
    When,
)
from django.db.models.expressions import RawSQL

from cloudpacs.models import Instance, InstanceCountMark, Series, Study

logger = logging.getLogger(__name__)

# How long a fold waits for the transactions writing instances when it began (PostgreSQL):
# an instance's statement commits in milliseconds; one that holds the table longer (a
# study deleted) leaves the fold to the next sweep.
WRITERS_WAIT = 5.0


# A reader that probes reads the instances above the mark, up to this many for each series or
# study it asks about (exact_by_series, exact_by_study); with more it probes each of its
# series instead. While consoles push they are about a second's instances (the sweep folds
# once a second); more, and the reader pays for its own rows, not for the archive's backlog.
# About where the two ways cost alike on PostgreSQL (SQLite: 2 and 5; docs/benchmarks-scale.md).
PENDING_PER_SERIES = 3
PENDING_PER_STUDY = 8

# The name under which a reader's rows carry the gate (with_counted).
COUNTED = "counters_exact"

_Q = TypeVar("_Q", bound=QuerySet[Any])


def unfolded() -> Q:
    """Of instances: those that the stored counters do not count yet."""
    return Q(pk__gt=F("series__counted_through"))


def all_counted() -> RawSQL:
    """Of any statement: whether no instance is above the mark, so that the stored counters
    it reads count every instance it sees (the module's docstring). Two uncorrelated
    subqueries, each run once per statement: the end of the instance table's primary key
    index, the mark's row. No mark's row (a flushed test database) reads as not counted.
    Written as SQL: the ORM's Exists over a Subquery took 0.5 ms of the reader's CPU to
    compile at every page (bench/scale/archive_counts.py, SQLite)."""
    return RawSQL(  # noqa: S611 (table names, no input)
        f"EXISTS (SELECT 1 FROM {InstanceCountMark._meta.db_table} WHERE id = 1"  # noqa: S608 (no input)
        f" AND through >= (SELECT COALESCE(MAX(id), 0) FROM {Instance._meta.db_table}))",
        (),
        output_field=BooleanField(),
    )


def with_counted(queryset: _Q) -> _Q:
    """The reader's queryset with the gate (all_counted) as COUNTED on each row, read in the
    statement that reads the stored counters. Name COUNTED in a values() after it."""
    return queryset.annotate(**{COUNTED: all_counted()})  # type: ignore[return-value]


def counted(items: list[Any]) -> bool:
    """Whether the rows (objects or values() dicts) were read with_counted and the gate held."""
    return bool(items) and all(
        bool(item.get(COUNTED) if isinstance(item, dict) else getattr(item, COUNTED, False)) for item in items
    )


def _pending(cap: int, select: str) -> str:
    """A statement that first reads the instances above the mark, at most `cap` + 1 of them in
    id order (the end of the primary key's index): `pending`, with `per_series` (series_id,
    n) and `over` (whether there were more than `cap`); then `select`, which reads the
    stored counters and adds them.

    Every instance above the mark is above its series' mark (a fold moves the marks of the
    series it counts and the mark's row to the same id, and nothing else moves them), and
    every instance at or below the mark is counted: so a series' instances above the mark
    are exactly those its stored counter lacks, with no comparison with its own mark. One
    statement, for the reason the module's docstring gives."""
    instance, mark = _tables(Instance, InstanceCountMark)
    return (
        f"WITH pending AS (SELECT id, series_id FROM {instance}"  # noqa: S608 (table names and an int, no input)
        f" WHERE id > COALESCE((SELECT through FROM {mark} WHERE id = 1), 0) ORDER BY id LIMIT {int(cap) + 1}),"
        " per_series AS (SELECT series_id, COUNT(*) AS n FROM pending GROUP BY series_id),"
        f" over AS (SELECT COUNT(*) > {int(cap)} AS over FROM pending){select}"
    )


def _tables(*models: Any) -> list[str]:
    return [connection.ops.quote_name(model._meta.db_table) for model in models]


def _exact(sql: str, pks: list[int]) -> dict[int, int]:
    with connection.cursor() as cursor:
        cursor.execute(sql, pks)
        return {pk: int(exact) for pk, exact in cursor.fetchall()}


def exact_by_series(series_pks: Iterable[int]) -> dict[int, int]:
    """Each series' exact number of instances: its stored counter and its instances above the
    mark, read in one statement (one snapshot: a fold committing between two reads would
    otherwise move instances from the second into the first unseen).

    The instances above the mark are read once for all the series (_pending): while
    consoles push they are the last second's, and most series asked about have none.
    Above PENDING_PER_SERIES a series (the sweep stopped or held back), the answer is the
    same exact count, from each series' instances after its own mark, a range of the
    instance table's (series, id) index: the reader pays for its own series' unfolded
    instances and at most PENDING_PER_SERIES a series of the backlog, whatever its size.
    Plain SQL: the ORM took most of the time to compile it (docs/benchmarks-scale.md)."""
    pks = sorted(set(series_pks))
    if not pks:
        return {}
    series, instance = _tables(Series, Instance)
    return _exact(
        _pending(
            PENDING_PER_SERIES * len(pks),
            f" SELECT s.id, s.number_of_instances + CASE WHEN (SELECT over FROM over) THEN"  # noqa: S608 (no input)
            f" (SELECT COUNT(*) FROM {instance} i WHERE i.series_id = s.id AND i.id > s.counted_through)"
            f" ELSE COALESCE(p.n, 0) END FROM {series} s LEFT JOIN per_series p ON p.series_id = s.id"
            f" WHERE s.id IN ({', '.join(['%s'] * len(pks))})",
        ),
        pks,
    )


def exact_by_study(study_pks: Iterable[int]) -> dict[int, int]:
    """Each study's exact number of instances, in one statement as exact_by_series: the
    series with instances above the mark looked up by key for their study; above
    PENDING_PER_STUDY a study, its series by their study index, then each series' range after
    its mark."""
    pks = sorted(set(study_pks))
    if not pks:
        return {}
    study, series, instance = _tables(Study, Series, Instance)
    return _exact(
        _pending(
            PENDING_PER_STUDY * len(pks),
            f", per_study AS (SELECT s.study_id, SUM(p.n) AS n FROM per_series p"  # noqa: S608 (no input)
            f" JOIN {series} s ON s.id = p.series_id GROUP BY s.study_id)"
            f" SELECT st.id, st.number_of_instances + CASE WHEN (SELECT over FROM over) THEN"
            f" (SELECT COUNT(*) FROM {instance} i JOIN {series} s ON s.id = i.series_id"
            f" WHERE s.study_id = st.id AND i.id > s.counted_through)"
            f" ELSE COALESCE(p.n, 0) END FROM {study} st LEFT JOIN per_study p ON p.study_id = st.id"
            f" WHERE st.id IN ({', '.join(['%s'] * len(pks))})",
        ),
        pks,
    )


def exact_rows(
    rows: list[MutableMapping[str, Any]],
    *,
    study: tuple[str, str] | None = None,
    series: tuple[str, str] | None = None,
) -> None:
    """Make exact the counters of rows read with values(): `study` and `series` name each
    level's (primary key, number_of_instances) keys. Rows read with_counted when the gate
    held need nothing (COUNTED is taken out of every row); otherwise one query per level
    for all rows."""
    gate = counted(rows)
    for row in rows:
        row.pop(COUNTED, None)
    if gate:
        return
    for names, exact in ((study, exact_by_study), (series, exact_by_series)):
        if names is None or not rows:
            continue
        pk, field = names
        found = exact(row[pk] for row in rows if row.get(pk) is not None)
        for row in rows:
            if row.get(pk) in found:
                row[field] = found[row[pk]]


def _made_exact(rows: Iterable[Any], gate: bool, exact_by: Callable[[Iterable[int]], dict[int, int]]) -> list[Any]:
    rows = list(rows)
    if gate or counted(rows):
        return rows
    found = exact_by(row.pk for row in rows)
    for row in rows:
        row.number_of_instances = found.get(row.pk, row.number_of_instances)
    return rows


def exact_studies(studies: Iterable[Study], *, gate: bool = False) -> list[Study]:
    """The studies with their number_of_instances made exact, in place (to show; never saved).
    Nothing to do when they were read with_counted and the gate held, or when `gate` says
    it held for the statement that read them (counted() of the rows they came with)."""
    return _made_exact(studies, gate, exact_by_study)


def exact_series(series_list: Iterable[Series], *, gate: bool = False) -> list[Series]:
    """The series with their number_of_instances made exact, in place (to show; never saved),
    as exact_studies."""
    return _made_exact(series_list, gate, exact_by_series)


def study_instances(study: Study | int) -> int:
    """One study's exact number of instances."""
    pk = study if isinstance(study, int) else study.pk
    return exact_by_study([pk]).get(pk, 0)


def series_instances(series: Series | int) -> int:
    """One series' exact number of instances."""
    pk = series if isinstance(series, int) else series.pk
    return exact_by_series([pk]).get(pk, 0)


def last_received(study: Study | int) -> datetime | None:
    """When the study's newest instance arrived: the stored last_received_at (the fold's) or
    the newest of its instances after their series' marks, read in one statement as the
    counters are (a fold between two reads could move the newest out of the second before
    the first saw it). None for a study with no instance and no arrival."""
    pk = study if isinstance(study, int) else study.pk
    newest = (
        Instance.objects.filter(unfolded(), series__study_id=OuterRef("pk"))
        .order_by()
        .values("series__study_id")
        .annotate(newest=Max("received_at"))
        .values("newest")
    )
    found = Study.objects.filter(pk=pk).annotate(newest=Subquery(newest)).values_list("last_received_at", "newest")
    return max(filter(None, found.first() or ()), default=None)


def all_folded() -> Q:
    """Of studies: whether every instance of the study is counted (none after its series'
    marks): the stability sweep claims no study before its instances are folded."""
    return ~Q(Exists(Instance.objects.filter(unfolded(), series__study_id=OuterRef("pk"))))


def _mark() -> InstanceCountMark:
    """The mark's row, locked until the transaction ends: one fold at a time. An UPDATE
    first, so that on SQLite the transaction holds the write lock before it reads."""
    if not InstanceCountMark.objects.filter(pk=1).update(through=F("through")):
        InstanceCountMark.objects.get_or_create(pk=1)
    return InstanceCountMark.objects.get(pk=1)


def has_unfolded() -> bool:
    """Whether any instance is not folded yet (a read: the sweep's clock asks every second)."""
    through = InstanceCountMark.objects.filter(pk=1).values_list("through", flat=True).first() or 0
    return Instance.objects.filter(pk__gt=through).exists()


def _writers_done(wait: float, cursor: Any = None) -> bool:
    """PostgreSQL: wait until every transaction that held the instance table for writing
    when this is called has ended; False when one is still there after `wait` seconds.
    `cursor`: the database's to ask (the default connection's when not given).

    Why: ids are handed out in order but committed in any order. Every instance whose id
    is at most the highest committed id was given its id by a transaction that had
    locked the table (every INSERT locks its table before it runs), so once those
    transactions have ended each such id is committed or will never be: the fold may
    count up to it, and an instance committed later always has a higher id. No lock is
    taken: the statements storing instances go on meanwhile.

    pg_locks lists the locks of the whole cluster, and a relation's number is unique only
    within its database: databases made from one template (pytest-xdist's per-worker test
    databases, a restored copy beside the live archive) hold their instance tables under
    the same number. So the writers are looked for in this database only; another's
    would hold the fold back for nothing (every fold of a test worker waited out `wait`
    behind another worker's open transaction)."""
    if cursor is None:
        with connection.cursor() as own:
            return _writers_done(wait, own)
    cursor.execute(
        "SELECT array_agg(DISTINCT virtualtransaction) FROM pg_locks"
        " WHERE locktype = 'relation' AND mode = 'RowExclusiveLock'"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " AND relation = %s::regclass AND pid IS DISTINCT FROM pg_backend_pid()",
        [Instance._meta.db_table],
    )
    writers = cursor.fetchone()[0]
    if not writers:
        return True
    deadline = time.monotonic() + wait
    while True:
        cursor.execute("SELECT EXISTS (SELECT 1 FROM pg_locks WHERE virtualtransaction = ANY(%s))", [writers])
        if not cursor.fetchone()[0]:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)


def fold(wait: float = WRITERS_WAIT) -> int:
    """Count the instances received since the last fold into their series' and studies'
    stored counters, with the study's last arrival and, for a study already handed over,
    its status (updated); returns how many instances it folded. One update per series
    and per study. Safe beside the receiver storing, and beside another fold (the mark's
    row makes them take turns)."""
    with transaction.atomic():
        mark = _mark()
        top = Instance.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
        if top <= mark.through:
            return 0
        if connection.vendor == "postgresql" and not _writers_done(wait):
            logger.info("instance counters not folded: a transaction writing instances is still open")
            return 0
        new = Instance.objects.filter(pk__gt=mark.through, pk__lte=top)
        touched = sorted(set(new.order_by().values_list("series_id", flat=True)))
        # Locked before they are counted, in the order of every other writer (the series,
        # then its study): an instance taken back meanwhile (services._unindex_unsynced)
        # is either counted and then subtracted, or neither.
        studies = dict(
            Series.objects.select_for_update(no_key=True)
            .filter(pk__in=touched)
            .order_by("pk")
            .values_list("pk", "study_id")
        )
        counted = {
            series_pk: (count, last)
            for series_pk, count, last in new.order_by()
            .values("series_id")
            .annotate(count=Count("pk"), last=Max("received_at"))
            .values_list("series_id", "count", "last")
        }
        per_study: dict[int, tuple[int, Any]] = {}
        for series_pk in studies:
            count, last = counted.get(series_pk, (0, None))
            Series.objects.filter(pk=series_pk).update(
                number_of_instances=F("number_of_instances") + count, counted_through=top
            )
            if count:
                study_count, study_last = per_study.get(studies[series_pk], (0, None))
                per_study[studies[series_pk]] = (study_count + count, max(filter(None, (study_last, last))))
        for study_pk in sorted(per_study):
            count, last = per_study[study_pk]
            arrived = Study.objects.filter(pk=study_pk).values_list("last_received_at", flat=True).first()
            Study.objects.filter(pk=study_pk).update(
                number_of_instances=F("number_of_instances") + count,
                last_received_at=max(filter(None, (arrived, last))),
                # An instance after the study was handed over (it was claimed with none unfolded).
                status=Case(
                    When(status=Study.Status.ARRIVED, then=Value(Study.Status.UPDATED)),
                    default=F("status"),
                ),
            )
        InstanceCountMark.objects.filter(pk=1).update(through=top)
    return sum(count for count, _last in per_study.values())
