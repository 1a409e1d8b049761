"""`manage.py seed_hanyin`: the Hanyin County demo.

Loads the county hospital, its eleven townships with their machines, the people (nine
radiologists, a technologist per township, an administrator), a small reading roster, the
Shaanxi 2021 prices and, unless `--no-history`, the 62,305 exams of the paper's Tables 1
and 2 as delivered consults with one ledger entry each, timed so each township's mean
consult time is Figure 2's.

Deterministic: a fixed random seed, so the same database gets the same rows. Safe to run
again: facilities, machines and users are upserted by code, AE title and username, and the
history is skipped when present. Fast: the history is built in memory and bulk-inserted."""

from __future__ import annotations

import hashlib
import random
import time
import uuid
from bisect import bisect_left
from collections.abc import Callable
from datetime import date, datetime, timedelta
from itertools import accumulate
from operator import attrgetter
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from django.conf import settings
from django.contrib.auth import password_validation
from django.contrib.auth.hashers import get_hasher, make_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection, transaction
from django.db.models import Count, Field, Model, QuerySet, Sum
from django.utils import timezone
from django.utils.translation import gettext as _

from billing import hanyin, rollup
from billing.models import LedgerEntry
from billing.services import PriceBook, ensure_shaanxi_2021_schedule, ledger_values_for
from consults.models import Assignment, Consult, Priority
from facilities.demo import demo_accounts, demo_password
from facilities.models import ExamKind, Facility, Modality, RosterShift, User
from facilities.services import audit

M = TypeVar("M", bound=Model)

SEED = 20250928
BATCH_SIZE = 2000
HANYIN_TZ = ZoneInfo("Asia/Shanghai")

# Consult time = a floor (assigning, opening, reading at least) + a right-skewed part.
CONSULT_FLOOR_SECONDS = 300
CONSULT_SPREAD_SIGMA = 0.5
# Relative reading effort: a CT takes longer than a DR; emergencies are read first.
KIND_EFFORT: dict[str, float] = {ExamKind.CT: 1.3, ExamKind.DR: 1.0}
PRIORITY_EFFORT: dict[str, float] = {Priority.ROUTINE: 1.0, Priority.URGENT: 0.75, Priority.EMERGENCY: 0.5}
PRIORITIES = (Priority.ROUTINE, Priority.URGENT, Priority.EMERGENCY)

# Working hours at the townships, local time, for all but emergencies.
WORKDAY_START_SECONDS = 8 * 3600
WORKDAY_END_SECONDS = 17 * 3600 + 1800

ROSTER_DAYS = 14
DAY_SHIFT = (8, 10)  # starts 08:00, lasts 10 hours
NIGHT_SHIFT = (18, 14)  # starts 18:00, lasts until 08:00
DAY_SHIFT_SIZE = 3


class Command(BaseCommand):
    help = "Load the Hanyin County demo: facilities, users, prices and the published exam history."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--no-history",
            action="store_true",
            help="Only facilities, machines, users, roster and prices; no historical exams.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        started = time.monotonic()
        with transaction.atomic():
            county, townships = upsert_facilities()
            upsert_modalities(townships)
            users = upsert_users(county, townships)
            shifts = ensure_roster([u for u in users if u.is_radiologist], timezone.now())
            ensure_shaanxi_2021_schedule()
            added = 0 if options["no_history"] else ensure_history(townships, users)
            if not options["no_history"]:
                # The dashboards read the daily rollup: it follows the history just loaded.
                rollup.rebuild()
                rollup.start_cursor_at_the_end()
        self._summary(added, shifts, time.monotonic() - started)

    def _summary(self, added: int, shifts: int, seconds: float) -> None:
        out = self.stdout
        codes = [t.code for t in hanyin.TOWNSHIPS]
        out.write(_("汉阴演示数据已就绪（%(seconds).1f 秒）。") % {"seconds": seconds})
        out.write(
            _("机构 %(facilities)d 个，设备 %(modalities)d 台，用户 %(users)d 个，新增排班 %(shifts)d 个。")
            % {
                "facilities": Facility.objects.filter(code__in=[hanyin.COUNTY_CODE, *codes]).count(),
                "modalities": Modality.objects.filter(facility__code__in=codes).count(),
                "users": User.objects.filter(username__in=demo_usernames()).count(),
                "shifts": shifts,
            }
        )
        history = historical_consults()
        by_kind = dict(history.values_list("kind").annotate(n=Count("id")).order_by("kind"))
        savings = dict(
            LedgerEntry.objects.filter(consult__in=history)
            .values_list("exam_kind")
            .annotate(total=Sum("saving"))
            .order_by("exam_kind")
        )
        out.write(
            _(
                "历史检查 %(total)d 例（本次新增 %(added)d）：CT %(ct)d，DR %(dr)d；"
                "节省 CT %(ct_saving)s 元，DR %(dr_saving)s 元。"
            )
            % {
                "total": sum(by_kind.values()),
                "added": added,
                "ct": by_kind.get(ExamKind.CT, 0),
                "dr": by_kind.get(ExamKind.DR, 0),
                "ct_saving": savings.get(ExamKind.CT, 0),
                "dr_saving": savings.get(ExamKind.DR, 0),
            }
        )
        if not settings.DEMO_MODE:
            out.write(_("DEMO_MODE 已关闭：不显示演示账号密码。"))
            return
        out.write(_("演示账号："))
        accounts = demo_accounts(User.objects.filter(username__in=demo_usernames()))
        width = max(len(a.username) for a in accounts)
        out.write(f"  {_('用户名'):<{width}}  {_('角色')}\t{_('机构')}\t{_('密码')}")
        for account in accounts:
            out.write(f"  {account.username:<{width}}  {account.role_label}\t{account.facility}\t{account.password}")


def demo_usernames() -> list[str]:
    return [
        hanyin.ADMIN_USERNAME,
        *(r.username for r in hanyin.RADIOLOGISTS),
        *(technologist_username(t) for t in hanyin.TOWNSHIPS),
    ]


def technologist_username(township: hanyin.Township) -> str:
    return f"tech_{township.pinyin.lower()}"


def historical_consults() -> QuerySet[Consult]:
    """The demo's past exams: at its townships, with no images in this archive."""
    return Consult.objects.filter(study__isnull=True, facility__code__in=[t.code for t in hanyin.TOWNSHIPS])


def _upsert(model: Any, lookup: dict[str, Any], fields: dict[str, Any]) -> Any:
    """Create the row, or bring an existing one back to the demo's values; no write when
    nothing differs, so a second run changes nothing."""
    obj = model.objects.filter(**lookup).first()
    if obj is None:
        return model.objects.create(**lookup, **fields)
    changed = [name for name, value in fields.items() if _current(obj, name, value) != value]
    for name in changed:
        setattr(obj, name, fields[name])
    if changed:
        obj.save(update_fields=changed)
    return obj


def _current(obj: Any, name: str, wanted: Any) -> Any:
    # A foreign key is compared by its id, without fetching the related row.
    if isinstance(wanted, Model):
        return wanted if getattr(obj, f"{name}_id") == wanted.pk else None
    return getattr(obj, name)


def upsert_facilities() -> tuple[Facility, dict[str, Facility]]:
    county = _upsert(
        Facility,
        {"code": hanyin.COUNTY_CODE},
        {
            "name": hanyin.COUNTY_NAME,
            "short_name": hanyin.COUNTY_SHORT_NAME,
            "pinyin": hanyin.COUNTY_PINYIN,
            "kind": Facility.Kind.COUNTY_HOSPITAL,
            "level": Facility.Level.SECOND,
        },
    )
    townships = {
        t.code: _upsert(
            Facility,
            {"code": t.code},
            {
                "name": t.name,
                "short_name": t.short_name,
                "pinyin": t.pinyin,
                "kind": Facility.Kind.TOWNSHIP_CENTRE,
                "level": Facility.Level.FIRST,
            },
        )
        for t in hanyin.TOWNSHIPS
    }
    return county, townships


def upsert_modalities(townships: dict[str, Facility]) -> dict[tuple[str, str], Modality]:
    machines: dict[tuple[str, str], Modality] = {}
    for t in hanyin.TOWNSHIPS:
        facility = townships[t.code]
        manufacturer, model_name = hanyin.DR_MACHINES.get(t.code, hanyin.DEFAULT_DR_MACHINE)
        machines[(t.code, ExamKind.DR)] = _upsert(
            Modality,
            {"ae_title": f"{t.code}_DR"},
            {"facility": facility, "kind": ExamKind.DR, "manufacturer": manufacturer, "model_name": model_name},
        )
        if t.has_ct:
            machines[(t.code, ExamKind.CT)] = _upsert(
                Modality,
                {"ae_title": f"{t.code}_CT"},
                {
                    "facility": facility,
                    "kind": ExamKind.CT,
                    "manufacturer": hanyin.CT_MANUFACTURER,
                    "model_name": hanyin.CT_MODEL,
                },
            )
    return machines


def _demo_salt(role: str) -> str:
    return hashlib.sha256(f"yunying-demo-{role}".encode()).hexdigest()[:22]


def demo_password_hash(role: str) -> str:
    """The role's public demo password, hashed with a salt derived from the role: the
    passwords are printed anyway, and a fixed salt keeps a second run from rewriting rows."""
    return make_password(demo_password(role), salt=_demo_salt(role))


def _has_demo_password(encoded: str, role: str) -> bool:
    """Whether `encoded` is what demo_password_hash(role) gives, without hashing again
    (a hash takes most of a second): only our hashing uses this salt, and a password
    changed through the site gets a random one."""
    hasher = get_hasher()
    return (
        encoded.startswith(f"{hasher.algorithm}$")
        and encoded.split("$")[2:3] == [_demo_salt(role)]
        and not hasher.must_update(encoded)
    )


def upsert_users(county: Facility, townships: dict[str, Facility]) -> list[User]:
    hashes: dict[str, str] = {}
    current = dict(User.objects.filter(username__in=demo_usernames()).values_list("username", "password"))
    wanted: list[tuple[str, dict[str, Any]]] = [
        (
            hanyin.ADMIN_USERNAME,
            {
                "role": User.Role.ADMINISTRATOR,
                "facility": county,
                "display_name": hanyin.ADMIN_DISPLAY_NAME,
                "is_staff": True,
                "is_superuser": True,
            },
        )
    ]
    wanted += [
        (
            r.username,
            {
                "role": User.Role.RADIOLOGIST,
                "facility": county,
                "display_name": r.display_name,
                "reads_ct": r.reads_ct,
                "reads_dr": r.reads_dr,
                "is_senior": r.is_senior,
            },
        )
        for r in hanyin.RADIOLOGISTS
    ]
    wanted += [
        (
            technologist_username(t),
            {"role": User.Role.TECHNOLOGIST, "facility": townships[t.code], "display_name": f"{t.short_name}技师"},
        )
        for t in hanyin.TOWNSHIPS
    ]
    users = []
    for username, fields in wanted:
        candidate = User(username=username, **fields)
        try:
            password_validation.validate_password(demo_password(fields["role"]), candidate)
        except ValidationError as error:
            raise CommandError(f"the demo password of {username} fails the password validators: {error}") from error
        role = fields["role"]
        if _has_demo_password(current.get(username, ""), role):
            fields["password"] = current[username]
        else:
            fields["password"] = hashes.get(role) or hashes.setdefault(role, demo_password_hash(role))
        fields["is_active"] = True
        users.append(_upsert(User, {"username": username}, fields))
    return users


def _rotated(people: list[User], k: int) -> list[User]:
    k %= len(people)
    return people[k:] + people[:k]


def ensure_roster(radiologists: list[User], now: datetime) -> int:
    """Shifts for the coming two weeks: by day three readers led by a senior, by night one
    CT reader, who has the next day off. Shifts already on the roster are left alone."""
    seniors = [r for r in radiologists if r.is_senior]
    ct_readers = [r for r in radiologists if r.reads_ct]
    if not seniors or not ct_readers or len(radiologists) < DAY_SHIFT_SIZE + 2:
        return 0
    first_day = timezone.localtime(now, HANYIN_TZ).date()
    wanted: list[RosterShift] = []
    resting: User | None = None
    for offset in range(ROSTER_DAYS):
        day = first_day + timedelta(days=offset)
        n = day.toordinal()
        lead = next(r for r in _rotated(seniors, n) if r != resting)
        others = [r for r in _rotated(radiologists, n) if r not in (lead, resting)]
        crew = [lead, *others[: DAY_SHIFT_SIZE - 1]]
        start = datetime(day.year, day.month, day.day, DAY_SHIFT[0], tzinfo=HANYIN_TZ)
        for member in crew:
            end = start + timedelta(hours=DAY_SHIFT[1])
            wanted.append(RosterShift(radiologist=member, starts_at=start, ends_at=end, is_lead=member == lead))
        night = next((r for r in _rotated(ct_readers, 3 * n) if r not in crew and r != resting), ct_readers[0])
        start = datetime(day.year, day.month, day.day, NIGHT_SHIFT[0], tzinfo=HANYIN_TZ)
        end = start + timedelta(hours=NIGHT_SHIFT[1])
        wanted.append(RosterShift(radiologist=night, starts_at=start, ends_at=end, is_lead=True))
        resting = night
    present = set(
        RosterShift.objects.filter(
            radiologist__in=radiologists, starts_at__gte=wanted[0].starts_at, starts_at__lte=wanted[-1].starts_at
        ).values_list("radiologist_id", "starts_at")
    )
    missing = [s for s in wanted if (s.radiologist_id, s.starts_at) not in present]
    RosterShift.objects.bulk_create(missing)
    return len(missing)


def ensure_history(townships: dict[str, Facility], users: list[User]) -> int:
    """Insert the historical exams and their ledger entries unless they are present; add
    any ledger entry missing from exams that are. Returns the number of exams added."""
    if historical_consults().exists():
        book = PriceBook.load()
        unpriced = list(historical_consults().filter(ledger_entries__isnull=True).order_by("id"))
        _bulk_ledger(unpriced, book)
        return 0
    machines = {(m.facility.code, m.kind): m for m in Modality.objects.select_related("facility")}
    radiologists = {u.username: u for u in users if u.is_radiologist}
    consults = build_history(townships, machines, radiologists)
    bulk_insert(Consult, consults)
    if any(c.pk is None for c in consults):
        # The fast insert does not hand keys back: these are all the historical consults.
        ids = dict(historical_consults().values_list("uuid", "id"))
        for c in consults:
            c.pk = ids[c.uuid]
    _bulk_ledger(consults, PriceBook.load())
    audit(
        "billing.saving.seeded",
        object_type="billing.ledgerentry",
        object_id="hanyin-history",
        exams=len(consults),
        seed=SEED,
    )
    return len(consults)


def _bulk_ledger(consults: list[Consult], book: PriceBook) -> None:
    new_entry = instance_factory(LedgerEntry)
    # Recorded when the report was signed, as record_saving would have done live.
    entries = [new_entry(**ledger_values_for(c, book), recorded_at=c.signed_at) for c in consults]
    bulk_insert(LedgerEntry, entries)


def instance_factory(model: type[M]) -> Callable[..., M]:
    """A faster `model(**values)` for building many unsaved rows: passes every concrete
    field positionally (Django's fast path) and fills the ones not given with their
    defaults, calling a callable default for each row as the model would."""
    fields = model._meta.concrete_fields
    per_row = {f.attname: f for f in fields if f.has_default() and callable(f.default)}
    constant = {f.attname: f.get_default() for f in fields if f.attname not in per_row}

    def build(**values: Any) -> M:
        args = []
        for f in fields:
            name = f.attname
            if name in values:
                args.append(values[name])
            elif name in per_row:
                args.append(per_row[name].get_default())
            else:
                args.append(constant[name])
        return model(*args)

    return build


# Field types whose Python values the database driver adapts itself: the rest go through
# Django's preparation, which is most of a bulk_create's time when done for every value.
_DRIVER_TYPES = {
    "BigIntegerField",
    "BooleanField",
    "CharField",
    "EmailField",
    "ForeignKey",
    "IntegerField",
    "OneToOneField",
    "PositiveIntegerField",
    "PositiveSmallIntegerField",
    "SlugField",
    "SmallIntegerField",
    "TextField",
}
_DRIVER_TYPES_PSYCOPG = _DRIVER_TYPES | {"DateField", "DateTimeField", "DecimalField", "UUIDField"}


def _row_maker(fields: list[Field[Any, Any]], driver_types: set[str]) -> Callable[[Model], list[Any]]:
    ops = connection.ops

    def adapt_datetime(name: str) -> Callable[[Model], Any]:
        return lambda obj: ops.adapt_datetimefield_value(getattr(obj, name))

    def prepare(field: Field[Any, Any]) -> Callable[[Model], Any]:
        return lambda obj: field.get_db_prep_save(field.pre_save(obj, True), connection)

    converters: list[Callable[[Model], Any]] = []
    for f in fields:
        kind = f.get_internal_type()
        if kind in driver_types:
            converters.append(attrgetter(f.attname))
        elif kind == "DateTimeField" and not (getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False)):
            converters.append(adapt_datetime(f.attname))
        else:
            converters.append(prepare(f))
    return lambda obj: [convert(obj) for convert in converters]


def bulk_insert(model: type[Model], objs: list[Any]) -> None:
    """Insert many new rows fast, without returning their keys: COPY on PostgreSQL, one
    prepared INSERT run for every row on SQLite, batched bulk_create elsewhere. As with
    any bulk_create, save() and model validation are bypassed; the database's constraints
    (checks, keys, uniqueness) still apply."""
    fields = [f for f in model._meta.concrete_fields if not f.primary_key]
    quote = connection.ops.quote_name
    table = quote(str(model._meta.db_table))
    columns = ", ".join(quote(str(f.column)) for f in fields)
    if connection.vendor == "postgresql":
        row = _row_maker(fields, _DRIVER_TYPES_PSYCOPG)
        with connection.cursor() as cursor, cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
            for obj in objs:
                copy.write_row(row(obj))
    elif connection.vendor == "sqlite":
        row = _row_maker(fields, _DRIVER_TYPES)
        placeholders = ", ".join(["%s"] * len(fields))
        with connection.cursor() as cursor:
            sql = f"INSERT INTO {table} ({columns}) VALUES ({placeholders})"  # noqa: S608 (names from _meta)
            cursor.executemany(sql, [row(o) for o in objs])
    else:
        model._default_manager.bulk_create(objs, batch_size=BATCH_SIZE)


def _days(year: int) -> tuple[list[date], list[float]]:
    first = date(year, 1, 1)
    last = min(date(year, 12, 31), hanyin.LAST_EXAM_DATE)
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    return days, list(accumulate(hanyin.WEEKDAY_WEIGHTS[d.weekday()] for d in days))


def _pick(rng: random.Random, items: list[Any], cumulative: list[float]) -> Any:
    return items[bisect_left(cumulative, rng.random() * cumulative[-1])]


def consult_seconds(rng: random.Random, efforts: list[float], mean_minutes: float) -> list[int]:
    """Whole seconds of consult time, one per exam: a floor plus a lognormal part scaled
    by each exam's effort, rescaled so the mean is mean_minutes to the second."""
    raw = [effort * rng.lognormvariate(0.0, CONSULT_SPREAD_SIGMA) for effort in efforts]
    n = len(raw)
    total = round(mean_minutes * 60 * n)
    spread_total = total - CONSULT_FLOOR_SECONDS * n
    scale = spread_total / sum(raw)
    seconds = [CONSULT_FLOOR_SECONDS + round(r * scale) for r in raw]
    # Rounding leaves the sum a few seconds off; take them from (or give them to) the
    # longest consults, which no one will notice.
    residual = total - sum(seconds)
    step = 1 if residual > 0 else -1
    for i in sorted(range(n), key=lambda i: -seconds[i])[: abs(residual)]:
        seconds[i] += step
    return seconds


def build_history(
    townships: dict[str, Facility],
    machines: dict[tuple[str, str], Modality],
    radiologists: dict[str, User],
    only: set[str] | None = None,
) -> list[Consult]:
    """The historical consults, unsaved, in arrival order. Each township draws from its
    own random stream, so its exams are the same whichever others are built (`only`)."""
    calendar = {year: _days(year) for year in hanyin.YEARS}
    priority_cum = list(accumulate(hanyin.PRIORITY_SHARES))
    readers: dict[str, tuple[list[User], list[float]]] = {}
    for exam_kind in (ExamKind.CT, ExamKind.DR):
        eligible = [r for r in hanyin.RADIOLOGISTS if (r.reads_ct if exam_kind == ExamKind.CT else r.reads_dr)]
        weights = list(accumulate(r.weight for r in eligible))
        readers[exam_kind] = ([radiologists[r.username] for r in eligible], weights)

    time_limits: dict[str, dict[str, int]] = settings.CONSULT_TIME_LIMITS
    new_consult = instance_factory(Consult)
    consults: list[Consult] = []
    for t in hanyin.TOWNSHIPS:
        if only is not None and t.code not in only:
            continue
        rng = random.Random(f"{SEED}-{t.code}")
        facility = townships[t.code]
        exams: list[tuple[str, datetime, str, int, User]] = []
        by_kind: tuple[tuple[str, tuple[int, ...]], ...] = ((ExamKind.CT, t.ct), (ExamKind.DR, t.dr))
        for kind, counts in by_kind:
            for year, n in zip(hanyin.YEARS, counts, strict=True):
                days, day_cum = calendar[year]
                for _i in range(n):
                    day = _pick(rng, days, day_cum)
                    priority = _pick(rng, list(PRIORITIES), priority_cum)
                    if priority == Priority.EMERGENCY:
                        second = rng.randrange(86_400)
                    else:
                        second = rng.randrange(WORKDAY_START_SECONDS, WORKDAY_END_SECONDS)
                    arrived = datetime(day.year, day.month, day.day, tzinfo=HANYIN_TZ) + timedelta(seconds=second)
                    # One body part per exam (billing/hanyin.py). The draw that once chose
                    # the parts is still taken, so every later draw (readers, times) and
                    # with them the rollup's rows stay what they were.
                    rng.random()
                    parts = 1
                    radiologist = _pick(rng, *readers[kind])
                    exams.append((kind, arrived, priority, parts, radiologist))
        efforts = [KIND_EFFORT[kind] * PRIORITY_EFFORT[priority] for kind, _a, priority, _p, _r in exams]
        durations = consult_seconds(rng, efforts, t.mean_consult_minutes)
        for (kind, arrived, priority, parts, radiologist), seconds in zip(exams, durations, strict=True):
            assign_after = max(1, min(rng.randrange(5, 120), seconds // 10))
            open_after = assign_after + int((seconds - assign_after) * rng.uniform(0.25, 0.7))
            signed = arrived + timedelta(seconds=seconds)
            consults.append(
                new_consult(
                    uuid=uuid.UUID(int=rng.getrandbits(128), version=4),
                    facility_id=facility.pk,
                    modality_id=machines[(t.code, kind)].pk,
                    kind=kind,
                    exam_date=arrived.date(),
                    body_parts=parts,
                    priority=priority,
                    status=Consult.Status.DELIVERED,
                    radiologist_id=radiologist.pk,
                    assignment=Assignment.ROSTER,
                    arrived_at=arrived,
                    due_at=arrived + timedelta(minutes=time_limits[priority][kind]),
                    assigned_at=arrived + timedelta(seconds=assign_after),
                    opened_at=arrived + timedelta(seconds=open_after),
                    signed_at=signed,
                    delivered_at=signed + timedelta(seconds=rng.randrange(2, 30)),
                )
            )
    # Insert in time order, so keys follow the calendar as they would have live.
    consults.sort(key=lambda c: c.arrived_at)
    return consults
