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
import heapq
import random
import time
import uuid
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from itertools import accumulate
from operator import attrgetter
from types import SimpleNamespace
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

from billing import hanyin, hanyin_people, hanyin_recent, hanyin_reports, rollup
from billing.models import LedgerEntry
from billing.services import PriceBook, ensure_shaanxi_2021_schedule, ledger_values_for
from cloudpacs.models import BodyPart, Patient, Study
from consults.models import Assignment, Consult, CriticalFinding, Priority, Report
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
# Reading itself, from opening the study to signing (median, seconds), and how many studies
# a reader has open at once at most: the rest of a consult's time it waits in their queue.
READING_SECONDS: dict[str, float] = {ExamKind.CT: 480.0, ExamKind.DR: 210.0}
MIN_READING_SECONDS = 45
MAX_OPEN_READS = 2

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
        parser.add_argument(
            "--with-images",
            action="store_true",
            help="Also send in a handful of recent studies with generated images (into STORAGE_ROOT), "
            "for the viewer and the reading page; skipped when the townships have images already.",
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
            recent = []
            if options["with_images"]:
                technologists = {u.facility_id: u for u in users if u.is_technologist and u.facility_id is not None}
                recent = hanyin_recent.ensure_recent_studies(townships, technologists)
        self._summary(added, shifts, time.monotonic() - started)
        if recent:
            self.stdout.write(_("新到检查 %(n)d 例（含影像），等待诊断。") % {"n": len(recent)})

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
    """The demo's past exams: at its townships, up to the paper's cut-off (their studies are
    index rows without images)."""
    return Consult.objects.filter(
        facility__code__in=[t.code for t in hanyin.TOWNSHIPS], exam_date__lte=hanyin.LAST_EXAM_DATE
    )


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
            "name_en": hanyin.COUNTY_NAME_EN,
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
                "name_en": t.name_en,
                "short_name": t.short_name,
                "pinyin": t.pinyin,
                "kind": Facility.Kind.TOWNSHIP_CENTRE,
                "level": Facility.Level.FIRST,
                **hanyin.travel_defaults(t.code),
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


def plan_roster(radiologists: list[User], first_day: date, days: int, resting: User | None = None) -> list[RosterShift]:
    """The shifts of `days` days from `first_day`, unsaved: by day three readers led by a
    senior, by night one CT reader, who has the next day off. The same rotation gave the
    history its readers, so the past and the coming weeks follow one roster."""
    seniors = [r for r in radiologists if r.is_senior]
    ct_readers = [r for r in radiologists if r.reads_ct]
    if not seniors or not ct_readers or len(radiologists) < DAY_SHIFT_SIZE + 2:
        return []
    wanted: list[RosterShift] = []
    for offset in range(days):
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
    return wanted


def ensure_roster(radiologists: list[User], now: datetime) -> int:
    """Shifts for the coming two weeks (plan_roster), from yesterday's: before 08:00 the
    reader on duty is yesterday's night shift. Shifts already on the roster are left alone."""
    first_day = timezone.localtime(now, HANYIN_TZ).date() - timedelta(days=1)
    wanted = plan_roster(radiologists, first_day, ROSTER_DAYS + 1)
    if not wanted:
        return 0
    present = set(
        RosterShift.objects.filter(
            radiologist__in=radiologists, starts_at__gte=wanted[0].starts_at, starts_at__lte=wanted[-1].starts_at
        ).values_list("radiologist_id", "starts_at")
    )
    missing = [s for s in wanted if (s.radiologist_id, s.starts_at) not in present]
    RosterShift.objects.bulk_create(missing)
    return len(missing)


def ensure_history(townships: dict[str, Facility], users: list[User]) -> int:
    """Insert the historical exams (patients, studies, consults, reports, ledger entries and
    the roster they were read on) unless they are present; add any ledger entry missing
    from exams that are. Returns the number of exams added."""
    if historical_consults().exists():
        book = PriceBook.load()
        # Only what record_saving would bill: a signed exam. An exam still open at a demo
        # township (a real one, or one a user added) gets its entry when it is signed.
        unpriced = list(
            historical_consults()
            .filter(
                ledger_entries__isnull=True,
                signed_at__isnull=False,
                status__in=(Consult.Status.SIGNED, Consult.Status.DELIVERED),
            )
            .order_by("id")
        )
        _bulk_ledger(unpriced, book)
        return 0
    machines = {(m.facility.code, m.kind): m for m in Modality.objects.select_related("facility")}
    radiologists = {u.username: u for u in users if u.is_radiologist}
    technologists = {u.facility_id: u for u in users if u.is_technologist and u.facility_id is not None}
    built = build_history(townships, machines, radiologists, technologists=technologists)
    RosterShift.objects.bulk_create(built.shifts, batch_size=BATCH_SIZE)
    bulk_insert(Patient, built.patients)
    patient_ids = dict(Patient.objects.filter(facility__in=townships.values()).values_list("uuid", "id"))
    for study in built.studies:
        study.patient_id = patient_ids[study.patient.uuid]
    bulk_insert(Study, built.studies)
    study_ids = dict(Study.objects.filter(facility__in=townships.values()).values_list("study_uid", "id"))
    consults = built.consults
    for c in consults:
        c.study_id = study_ids[built.study_uid_of[c.uuid]]
    bulk_insert(Consult, consults)
    ids = dict(historical_consults().values_list("uuid", "id"))
    for c in consults:
        c.pk = ids[c.uuid]
    for report in built.reports:
        report.consult_id = report.consult.pk
    bulk_insert(Report, built.reports)
    for finding in built.critical_findings:
        finding.consult_id = finding.consult.pk
    bulk_insert(CriticalFinding, built.critical_findings)
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


def row_factory(model: type[Model]) -> Callable[..., Any]:
    """Like instance_factory, for rows that are only inserted (bulk_insert) and never
    saved: a plain namespace with the model's attribute names and defaults, about ten
    times quicker to make than a model instance."""
    fields = model._meta.concrete_fields
    per_row = {f.attname: f for f in fields if f.has_default() and callable(f.default)}
    constant = {f.attname: f.get_default() for f in fields if f.attname not in per_row}

    def build(**values: Any) -> SimpleNamespace:
        row = dict(constant)
        for name, f in per_row.items():
            if name not in values:
                row[name] = f.get_default()
        row.update(values)
        return SimpleNamespace(**row)

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

    # SQLite's adaptations, as Django's backend does them, without its per-value checks
    # (most of the insert's time otherwise): aware datetimes as naive UTC text, dates and
    # times as text, UUIDs as hex.
    sqlite = connection.vendor == "sqlite" and settings.USE_TZ and connection.timezone_name == "UTC"

    def sqlite_datetime(name: str) -> Callable[[Model], Any]:
        def convert(obj: Model) -> Any:
            value = getattr(obj, name)
            return None if value is None else str(value.astimezone(UTC).replace(tzinfo=None))

        return convert

    def as_text(name: str) -> Callable[[Model], Any]:
        def convert(obj: Model) -> Any:
            value = getattr(obj, name)
            return None if value is None else str(value)

        return convert

    def as_hex(name: str) -> Callable[[Model], Any]:
        def convert(obj: Model) -> Any:
            value = getattr(obj, name)
            return None if value is None else value.hex

        return convert

    converters: list[Callable[[Model], Any]] = []
    for f in fields:
        kind = f.get_internal_type()
        automatic = getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False)
        if automatic:
            # auto_now / auto_now_add: the field's own pre_save sets it, as save() would
            # (the driver types would pass the unset attribute, a null, through).
            converters.append(prepare(f))
        elif kind in driver_types:
            converters.append(attrgetter(f.attname))
        elif sqlite and kind == "DateTimeField" and not automatic:
            converters.append(sqlite_datetime(f.attname))
        elif sqlite and kind in ("DateField", "TimeField") and not automatic:
            converters.append(as_text(f.attname))
        elif sqlite and kind == "UUIDField":
            converters.append(as_hex(f.attname))
        elif kind == "DateTimeField" and not automatic:
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
        rows = [model(**vars(o)) if isinstance(o, SimpleNamespace) else o for o in objs]
        model._default_manager.bulk_create(rows, batch_size=BATCH_SIZE)


def _days(year: int) -> tuple[list[date], list[float]]:
    first = date(year, 1, 1)
    last = min(date(year, 12, 31), hanyin.LAST_EXAM_DATE)
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    return days, list(accumulate(hanyin.day_weight(d) for d in days))


def _pick(rng: random.Random, items: list[Any], cumulative: list[float]) -> Any:
    return items[bisect_left(cumulative, rng.random() * cumulative[-1])]


def arrival_second(rng: random.Random, priority: str) -> int:
    """Seconds after local midnight: emergencies at any hour (fewer at night), the rest in
    working hours with a lunch break (hanyin.HALF_HOUR_WEIGHTS)."""
    if priority == Priority.EMERGENCY:
        hour = _pick(rng, list(range(24)), _EMERGENCY_HOURS)
        return hour * 3600 + rng.randrange(3600)
    slot = _pick(rng, list(range(len(hanyin.HALF_HOUR_WEIGHTS))), _HALF_HOURS)
    return (hanyin.FIRST_HALF_HOUR + slot) * 1800 + rng.randrange(1800)


_EMERGENCY_HOURS = list(accumulate(hanyin.EMERGENCY_HOUR_WEIGHTS))
_HALF_HOURS = list(accumulate(hanyin.HALF_HOUR_WEIGHTS))


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


_EPOCH = datetime(1970, 1, 1, tzinfo=HANYIN_TZ)


@dataclass
class Exam:
    """One historical exam while it is built: what the township did and what was read."""

    kind: str
    arrived: datetime
    priority: str
    part: BodyPart
    seconds: int = 0
    assigned: datetime = _EPOCH
    signed: datetime = _EPOCH
    reader: int = 0
    consult: Consult | None = None


@dataclass
class History:
    """The historical rows, unsaved: keys between them are set as they are inserted."""

    consults: list[Consult] = field(default_factory=list)
    # Patients, studies and reports as plain rows (row_factory).
    patients: list[Any] = field(default_factory=list)
    studies: list[Any] = field(default_factory=list)
    reports: list[Any] = field(default_factory=list)
    critical_findings: list[CriticalFinding] = field(default_factory=list)
    # Each consult's study, by the consult's UUID.
    study_uid_of: dict[uuid.UUID, str] = field(default_factory=dict)
    shifts: list[RosterShift] = field(default_factory=list)


def _mix(kind: str, parts: dict[str, BodyPart]) -> tuple[list[BodyPart], list[float]]:
    mix = [(parts[code], share) for code, share in hanyin.BODY_PART_MIX[kind] if code in parts]
    return [p for p, _s in mix], list(accumulate(s for _p, s in mix))


def _uid(rng: random.Random) -> str:
    # A UID under 2.25 (a UUID as a decimal number, PS3.5 B.2): unique without a registered root.
    return f"2.25.{rng.getrandbits(122)}"


def build_history(
    townships: dict[str, Facility],
    machines: dict[tuple[str, str], Modality],
    radiologists: dict[str, User],
    only: set[str] | None = None,
    technologists: dict[int, User] | None = None,
) -> History:
    """The historical rows, unsaved, consults in arrival order. Each township draws its
    exams, patients and reports from its own random stream, so they are the same whichever
    others are built (`only`); who read each exam follows the roster across all of them."""
    calendar = {year: _days(year) for year in hanyin.YEARS}
    priority_cum = list(accumulate(hanyin.PRIORITY_SHARES))
    parts = {p.code: p for p in BodyPart.objects.all()}
    mixes: dict[str, tuple[list[BodyPart], list[float]]] = {
        kind: _mix(kind, parts) for kind in (ExamKind.CT, ExamKind.DR)
    }
    normal_report = hanyin_reports.normal_report_source()
    time_limits: dict[str, dict[str, int]] = settings.CONSULT_TIME_LIMITS
    new_consult = instance_factory(Consult)
    new_patient = row_factory(Patient)
    new_study = row_factory(Study)
    new_report = row_factory(Report)
    history = History()
    exams: list[Exam] = []
    for t in hanyin.TOWNSHIPS:
        if only is not None and t.code not in only:
            continue
        rng = random.Random(f"{SEED}-{t.code}")
        facility = townships[t.code]
        drafts: list[Exam] = []
        by_kind: tuple[tuple[str, tuple[int, ...]], ...] = ((ExamKind.CT, t.ct), (ExamKind.DR, t.dr))
        for kind, counts in by_kind:
            for year, n in zip(hanyin.YEARS, counts, strict=True):
                days, day_cum = calendar[year]
                for _i in range(n):
                    day = _pick(rng, days, day_cum)
                    priority = _pick(rng, list(PRIORITIES), priority_cum)
                    second = arrival_second(rng, priority)
                    arrived = datetime(day.year, day.month, day.day, tzinfo=HANYIN_TZ) + timedelta(seconds=second)
                    drafts.append(Exam(kind, arrived, priority, _pick(rng, *mixes[kind])))
        efforts = [KIND_EFFORT[e.kind] * PRIORITY_EFFORT[e.priority] for e in drafts]
        for exam, seconds in zip(drafts, consult_seconds(rng, efforts, t.mean_consult_minutes), strict=True):
            exam.seconds = seconds
        # Patients, studies and reports in the township's own order of arrival.
        drafts.sort(key=attrgetter("arrived"))
        seen: list[Any] = []
        per_day: dict[date, int] = {}
        technologist = (technologists or {}).get(facility.pk)
        for exam in drafts:
            local = exam.arrived.astimezone(HANYIN_TZ)
            day = local.date()
            if seen and rng.random() < hanyin.RETURNING_SHARE:
                patient = rng.choice(seen[-400:])
            else:
                draft = hanyin_people.invent_patient(rng, f"{t.code[:2]}{len(seen) + 1:06d}", exam.part.code, day)
                patient = new_patient(
                    uuid=uuid.UUID(int=rng.getrandbits(128), version=4),
                    facility_id=facility.pk,
                    patient_id=draft.patient_id,
                    name=draft.name,
                    name_alphabetic=draft.name_alphabetic,
                    name_ideographic=draft.name_ideographic,
                    name_initials=draft.name_initials,
                    birth_date=draft.birth_date,
                    sex=draft.sex,
                )
                seen.append(patient)
                history.patients.append(patient)
            per_day[day] = per_day.get(day, 0) + 1
            seconds = exam.seconds
            assign_after = max(1, min(rng.randrange(5, 120), seconds // 10))
            signed = exam.signed = exam.arrived + timedelta(seconds=seconds)
            exam.assigned = exam.arrived + timedelta(seconds=assign_after)
            scanned = local - timedelta(seconds=rng.randrange(60, 600))
            study = new_study(
                study_uid=_uid(rng),
                facility_id=facility.pk,
                modality_id=machines[(t.code, exam.kind)].pk,
                study_date=scanned.date(),
                study_time=scanned.time().replace(microsecond=0),
                accession_number=f"{t.code[:2]}{day:%y%m%d}{per_day[day]:03d}",
                description=f"{exam.part.name_zh} {exam.kind}",
                modalities_in_study="CT" if exam.kind == ExamKind.CT else "DX",
                institution_name=facility.name,
                station_name=machines[(t.code, exam.kind)].ae_title,
                specific_character_set="ISO_IR 192",
                status=Study.Status.ARRIVED,
                first_received_at=exam.arrived - timedelta(seconds=rng.randrange(5, 60)),
                last_received_at=exam.arrived,
                arrived_at=exam.arrived,
                patient_name_received=patient.name,
                report_signed_at=signed,
            )
            study.patient = patient
            history.studies.append(study)
            consult = new_consult(
                uuid=uuid.UUID(int=rng.getrandbits(128), version=4),
                facility_id=facility.pk,
                modality_id=machines[(t.code, exam.kind)].pk,
                kind=exam.kind,
                exam_date=day,
                body_parts=1,
                body_part_names=exam.part.name_zh,
                priority=exam.priority,
                status=Consult.Status.DELIVERED,
                assignment=Assignment.ROSTER,
                arrived_at=exam.arrived,
                due_at=exam.arrived + timedelta(minutes=time_limits[exam.priority][exam.kind]),
                assigned_at=exam.assigned,
                signed_at=signed,
                delivered_at=signed + timedelta(seconds=rng.randrange(2, 30)),
            )
            history.study_uid_of[consult.uuid] = study.study_uid
            exam.consult = consult
            # What the reader wrote.
            age = (day - patient.birth_date).days // 365 if patient.birth_date else 50
            finding_share = min(
                hanyin.FINDING_MAX, hanyin.FINDING_BASE + hanyin.FINDING_PER_DECADE * max(0, age - 20) / 10
            )
            finding = hanyin_reports.draw_finding(
                rng, exam.kind, exam.part.code, age, exam.priority, hanyin.CRITICAL_SHARE[exam.priority], finding_share
            )
            if finding is None:
                findings, impression = normal_report(exam.kind, exam.part.code, exam.part.name_zh, "zh-hans")
            else:
                findings = finding.findings.format(part=exam.part.name_zh)
                impression = finding.impression.format(part=exam.part.name_zh)
            report = new_report(findings=findings, impression=impression, signed_at=signed)
            report.consult = consult
            history.reports.append(report)
            if finding is not None and finding.critical:
                acknowledged = signed + timedelta(seconds=rng.randrange(120, 1200))
                flagged = CriticalFinding(
                    uuid=uuid.UUID(int=rng.getrandbits(128), version=4),
                    description=finding.critical,
                    flagged_at=signed,
                    emailed_at=signed + timedelta(seconds=rng.randrange(2, 20)),
                    acknowledged_by=technologist,
                    acknowledged_at=acknowledged if technologist is not None else None,
                )
                flagged.consult = consult
                consult.acknowledged_at = flagged.acknowledged_at
                history.critical_findings.append(flagged)
        exams.extend(drafts)
    history.shifts = assign_readers(exams, list(radiologists.values()), random.Random(f"{SEED}-readers"))
    readers = {id(e.consult): e.reader for e in exams}
    for report in history.reports:
        report.author_id = report.signed_by_id = readers[id(report.consult)]
    for flagged in history.critical_findings:
        flagged.flagged_by_id = readers[id(flagged.consult)]
    # Insert in time order, so keys follow the calendar as they would have live.
    exams.sort(key=attrgetter("arrived"))
    history.consults = [e.consult for e in exams if e.consult is not None]
    return history


def _shift_key(moment: datetime) -> tuple[date, bool]:
    """The shift covering `moment`: (its first day, whether it is a night)."""
    local = moment.astimezone(HANYIN_TZ)
    if DAY_SHIFT[0] <= local.hour < DAY_SHIFT[0] + DAY_SHIFT[1]:
        return local.date(), False
    if local.hour >= NIGHT_SHIFT[0]:
        return local.date(), True
    return local.date() - timedelta(days=1), True


def assign_readers(exams: list[Exam], radiologists: list[User], rng: random.Random) -> list[RosterShift]:
    """Who read each exam, and when they opened it, as the live workflow would have done:
    at assignment the roster's qualified reader on duty who holds the fewest unsigned
    consults; each reader opens a consult shortly before signing it and has at most
    MAX_OPEN_READS open at once. Returns the roster (unsaved) that covers the exams."""
    if not exams:
        return []
    radiologists = sorted(radiologists, key=attrgetter("pk"))
    first = min(_shift_key(e.assigned)[0] for e in exams)
    last = max(e.arrived for e in exams).astimezone(HANYIN_TZ).date()
    shifts = plan_roster(radiologists, first, (last - first).days + 1)
    on_duty: dict[tuple[date, bool], list[User]] = {}
    for shift in shifts:
        key = (shift.starts_at.date(), shift.starts_at.hour == NIGHT_SHIFT[0])
        on_duty.setdefault(key, []).append(shift.radiologist)
    held: dict[int, list[datetime]] = {r.pk: [] for r in radiologists}
    exams.sort(key=attrgetter("assigned"))
    for exam in exams:
        crew = [r for r in on_duty[_shift_key(exam.assigned)] if r.can_read(exam.kind)]
        for reader in crew:
            queue = held[reader.pk]
            while queue and queue[0] <= exam.assigned:
                heapq.heappop(queue)
        fewest = min(len(held[r.pk]) for r in crew)
        reader = rng.choice([r for r in crew if len(held[r.pk]) == fewest])
        heapq.heappush(held[reader.pk], exam.signed)
        exam.reader = reader.pk
        if exam.consult is not None:
            exam.consult.radiologist_id = reader.pk
    by_reader: dict[int, list[Exam]] = {}
    for exam in exams:
        by_reader.setdefault(exam.reader, []).append(exam)
    for mine in by_reader.values():
        mine.sort(key=attrgetter("signed"))
        ends: list[datetime] = []
        for exam in mine:
            reading = READING_SECONDS[exam.kind] * rng.lognormvariate(0.0, 0.4) * PRIORITY_EFFORT[exam.priority]
            opened = max(exam.assigned, exam.signed - timedelta(seconds=max(reading, MIN_READING_SECONDS)))
            if len(ends) >= MAX_OPEN_READS:
                # Two reads still open: this one waits until the earlier of them is signed
                # (ends are in signing order, so the limit holds at every moment).
                opened = min(max(opened, ends[-MAX_OPEN_READS]), exam.signed)
            if exam.consult is not None:
                exam.consult.opened_at = opened
            ends.append(exam.signed)
    return shifts
