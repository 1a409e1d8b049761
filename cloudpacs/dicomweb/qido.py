"""QIDO-RS (PS3.18 10.6): matching on the index in SQL, one query per page.

Matching follows PS3.4 C.2.2.2: single value (exact), wildcard (* and ?), range (dates),
and UID list. Person names match case-insensitively against each of their component
groups, so 张* finds "Zhang^San=张^三" through its ideographic group, and 张三 finds it
too (carets are ignored when comparing ideographic names)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any

from django.db.models import Exists, F, Lookup, OuterRef, Q, QuerySet, Value
from django.db.models.functions import Replace, Upper
from django.http import QueryDict

from cloudpacs import counts
from cloudpacs.dicomweb import json as dj
from cloudpacs.dicomweb.http import bad_request
from cloudpacs.models import Instance, Series, Study

DEFAULT_LIMIT = 200
MAX_LIMIT = 1000
# Past any archive's size and within the database's integers (an offset of 10**20
# overflowed SQLite's, a server error): a larger offset is an empty page.
MAX_OFFSET = 2**31 - 1
# From this offset on, a page of studies is found by key first and read second.
DEEP_OFFSET = 500
CONTROL_PARAMETERS = {"limit", "offset", "includefield", "fuzzymatching", "accept", "charset"}


class Like(Lookup):
    """SQL LIKE with backslash as the escape character, on any backend. Used as an
    expression in filter(), so no lookup is registered on the model fields."""

    lookup_name = "dicomweb_like"
    prepare_rhs = False

    def as_sql(self, compiler: Any, connection: Any) -> Any:
        lhs, lhs_params = self.process_lhs(compiler, connection)
        rhs, rhs_params = self.process_rhs(compiler, connection)
        return f"{lhs} LIKE {rhs} ESCAPE '\\'", (*lhs_params, *rhs_params)


def has_wildcard(value: str) -> bool:
    return "*" in value or "?" in value


def like_pattern(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def text_match(path: str, value: str, *, case_insensitive: bool = False) -> Q:
    if value in {"*", ""}:
        return Q()
    if not has_wildcard(value):
        return Q(**{f"{path}__iexact" if case_insensitive else path: value})
    if case_insensitive:
        return Q(Like(Upper(F(path)), Upper(Value(like_pattern(value)))))
    return Q(Like(F(path), Value(like_pattern(value))))


def uid_list(path: str, value: str) -> Q:
    uids = [uid.strip() for uid in value.replace("\\", ",").split(",") if uid.strip()]
    if not uids:
        return Q()
    return Q(**{f"{path}__in": uids}) if len(uids) > 1 else Q(**{path: uids[0]})


def _date(text: str) -> date:
    try:
        return datetime.strptime(text.replace("-", "").replace(".", "")[:8], "%Y%m%d").date()
    except ValueError:
        raise bad_request(f"{text!r} is not a date (YYYYMMDD)") from None


def date_match(path: str, value: str) -> Q:
    """Single date, or a range: a-b, -b, a- (PS3.4 C.2.2.2.5)."""
    value = value.strip()
    if not value:
        return Q()
    if "-" in value and len(value.replace("-", "")) <= 16 and value.count("-") == 1:
        low, high = value.split("-")
        condition = Q()
        if low:
            condition &= Q(**{f"{path}__gte": _date(low)})
        if high:
            condition &= Q(**{f"{path}__lte": _date(high)})
        return condition
    return Q(**{path: _date(value)})


def parse_time(text: str, *, upper: bool = False) -> time:
    """HH, HHMM or HHMMSS (a fraction ignored; a colon tolerated). With `upper`, the last
    moment of what it names: 18 is up to 18:59:59.999999, 1800 up to 18:00:59.999999."""
    digits = text.strip().replace(":", "").split(".")[0]
    if not digits or not digits.isdigit() or len(digits) % 2 or len(digits) > 6:
        raise bad_request(f"{text!r} is not a time (HHMMSS)")
    given = [int(digits[i : i + 2]) for i in range(0, len(digits), 2)]
    rest = [59, 59, 999999] if upper else [0, 0, 0]
    hour, minute, second, fraction = [*given, *rest[len(given) - 1 :]]
    try:
        return time(hour, minute, second, fraction)
    except ValueError:
        raise bad_request(f"{text!r} is not a time (HHMMSS)") from None


def time_match(path: str, value: str) -> Q:
    """Single time or range (PS3.4 C.2.2.2.5): `1000` is 10:00:00 to 10:00:59, `-1800`
    up to 18:00:59, `2200-` from 22:00. With a date key beside it, each is matched on its
    own (cloudpacs.queryretrieve combines them when a C-FIND SCU negotiated that)."""
    value = value.strip()
    if value in {"", "*"}:
        return Q()
    if "-" not in value:
        return Q(**{f"{path}__gte": parse_time(value), f"{path}__lte": parse_time(value, upper=True)})
    low, high = value.split("-", 1)
    condition = Q()
    if low.strip():
        condition &= Q(**{f"{path}__gte": parse_time(low)})
    if high.strip():
        condition &= Q(**{f"{path}__lte": parse_time(high, upper=True)})
    return condition


def person_name_match(prefix: str, value: str) -> Q:
    """Match a PN query against the alphabetic, ideographic and phonetic groups.

    A query with '=' names its groups; each given group must match its own. A query of
    one group matches a patient when any of their groups matches."""
    # Trailing empty components say nothing (`Zhou^Li^^` is `Zhou^Li`); the index keeps
    # names without them (cloudpacs.services.trimmed_name_group).
    groups = [group.rstrip("^ ") for group in value.split("=")]
    value = "=".join(groups).rstrip("=")
    fields = [f"{prefix}name_alphabetic", f"{prefix}name_ideographic", f"{prefix}name_phonetic"]
    if len(groups) > 1:
        condition = Q()
        for path, group in zip(fields, groups, strict=False):
            if group:
                condition &= _one_group(path, group, ideographic=path.endswith("ideographic"))
        return condition
    if value in {"", "*"}:
        return Q()
    condition = Q()
    for path in fields:
        condition |= _one_group(path, value, ideographic=path.endswith("ideographic"))
    return condition


def _one_group(path: str, value: str, *, ideographic: bool) -> Q:
    condition = text_match(path, value, case_insensitive=True)
    if ideographic and "^" not in value:
        # 张三 for 张^三: Chinese names are written without the component separator.
        stripped = Replace(F(path), Value("^"), Value(""))
        condition |= Q(Like(Upper(stripped), Upper(Value(like_pattern(value)))))
    return condition


def modalities_match(study_path: str, value: str) -> Q:
    codes = [code.strip().upper() for code in value.replace("\\", ",").split(",") if code.strip()]
    if not codes:
        return Q()
    outer = OuterRef(study_path or "pk")
    return Q(Exists(Series.objects.filter(study=outer, modality__in=codes)))


def int_match(path: str, value: str) -> Q:
    if not value.strip():
        return Q()  # an empty value is universal matching, as for every other key
    try:
        return Q(**{path: int(value)})
    except ValueError:
        raise bad_request(f"{value!r} is not an integer") from None


# Matching keys by level: tag -> (keyword, builder(prefix, value)). Prefixes are the
# paths from the queried model to the study and the series.
Builder = Callable[[str, str, str], Q]

STUDY_KEYS: dict[str, tuple[str, Builder]] = {
    "00080020": ("StudyDate", lambda s, _r, v: date_match(f"{s}study_date", v)),
    "00080030": ("StudyTime", lambda s, _r, v: time_match(f"{s}study_time", v)),
    "00080050": ("AccessionNumber", lambda s, _r, v: text_match(f"{s}accession_number", v)),
    "00080061": ("ModalitiesInStudy", lambda s, _r, v: modalities_match(s.removesuffix("__"), v)),
    "00080090": (
        "ReferringPhysicianName",
        lambda s, _r, v: text_match(f"{s}referring_physician", v, case_insensitive=True),
    ),
    "00081030": ("StudyDescription", lambda s, _r, v: text_match(f"{s}description", v, case_insensitive=True)),
    "00100010": ("PatientName", lambda s, _r, v: person_name_match(f"{s}patient__", v)),
    "00100020": ("PatientID", lambda s, _r, v: text_match(f"{s}patient__patient_id", v)),
    "00100030": ("PatientBirthDate", lambda s, _r, v: date_match(f"{s}patient__birth_date", v)),
    "00100040": ("PatientSex", lambda s, _r, v: text_match(f"{s}patient__sex", v.upper())),
    "0020000D": ("StudyInstanceUID", lambda s, _r, v: uid_list(f"{s}study_uid", v)),
    "00200010": ("StudyID", lambda s, _r, v: text_match(f"{s}study_id", v)),
}
SERIES_KEYS: dict[str, tuple[str, Builder]] = {
    "00080060": ("Modality", lambda _s, r, v: uid_list(f"{r}modality", v.upper())),
    "0008103E": ("SeriesDescription", lambda _s, r, v: text_match(f"{r}description", v, case_insensitive=True)),
    "00180015": ("BodyPartExamined", lambda _s, r, v: text_match(f"{r}body_part_examined", v, case_insensitive=True)),
    "0020000E": ("SeriesInstanceUID", lambda _s, r, v: uid_list(f"{r}series_uid", v)),
    "00200011": ("SeriesNumber", lambda _s, r, v: int_match(f"{r}series_number", v)),
}
INSTANCE_KEYS: dict[str, tuple[str, Builder]] = {
    "00080016": ("SOPClassUID", lambda _s, _r, v: uid_list("sop_class_uid", v)),
    "00080018": ("SOPInstanceUID", lambda _s, _r, v: uid_list("sop_instance_uid", v)),
    "00200013": ("InstanceNumber", lambda _s, _r, v: int_match("instance_number", v)),
}


@dataclass
class Query:
    condition: Q
    limit: int
    offset: int
    explicit_limit: bool
    include: set[str] = field(default_factory=set)
    include_all: bool = False
    ignored: list[str] = field(default_factory=list)


def parse(params: QueryDict, level: str) -> Query:
    """Read matching keys and limit/offset/includefield for `level` (study, series or
    instance). Keys of the levels above are accepted too (PS3.18 10.6.1.2.3)."""
    keys = dict(STUDY_KEYS)
    if level in {"series", "instance"}:
        keys.update(SERIES_KEYS)
    if level == "instance":
        keys.update(INSTANCE_KEYS)
    study_prefix = {"study": "", "series": "study__", "instance": "series__study__"}[level]
    series_prefix = {"study": "", "series": "", "instance": "series__"}[level]
    condition = Q()
    ignored: list[str] = []
    matched: set[str] = set()
    for name in params:
        if name.lower() in CONTROL_PARAMETERS:
            continue
        key = dj.tag_key(name)
        if key is None or key not in keys:
            ignored.append(name)
            continue
        builder = keys[key][1]
        for value in params.getlist(name):
            condition &= builder(study_prefix, series_prefix, value)
        # A matching key is returned in each answer, as an included one is (PS3.18
        # 10.6.3.3: "all other ... Attributes passed as match ... parameters").
        matched.add(key)
    explicit_limit = "limit" in params
    limit = _non_negative(params.get("limit"), DEFAULT_LIMIT)
    offset = min(_non_negative(params.get("offset"), 0), MAX_OFFSET)
    include: set[str] = set()
    include_all = False
    for raw in params.getlist("includefield"):
        for item in raw.split(","):
            if item.strip().lower() == "all":
                include_all = True
            elif item.strip():
                key = dj.tag_key(item)
                if key is None:
                    raise bad_request(f"includefield {item!r} names no attribute")
                include.add(key)
    return Query(
        condition, min(limit, MAX_LIMIT) or MAX_LIMIT, offset, explicit_limit, include | matched, include_all, ignored
    )


def _non_negative(value: str | None, default: int) -> int:
    if value in (None, ""):
        return default
    try:
        number = int(value)
    except ValueError:
        raise bad_request(f"{value!r} is not a non-negative integer") from None
    if number < 0:
        raise bad_request(f"{value!r} is not a non-negative integer")
    return number


def page(queryset: QuerySet[Any], query: Query) -> tuple[list[Any], bool]:
    """One page of rows, and whether more rows follow beyond a limit the client did not
    ask for (then a Warning header tells them, PS3.18 8.3.4.4.1)."""
    rows = list(queryset[query.offset : query.offset + query.limit + 1])
    more = len(rows) > query.limit
    return rows[: query.limit], more and not query.explicit_limit


def study_page(queryset: QuerySet[Study], query: Query) -> tuple[list[dict[str, Any]], bool]:
    """page() of studies as STUDY_FIELDS rows. At a deep offset, the rows skipped are
    only counted along the order index (their keys, no patient joined), then the page's
    own rows are read by key: offset=5000 costs a walk of 5,000 index entries, not 5,000
    joined rows. The counters completed with the instances not folded yet (one query
    for the page, and none when the gate read with the rows holds: cloudpacs.counts)."""
    if query.offset < DEEP_OFFSET:
        rows, more = page(counts.with_counted(queryset).values("pk", counts.COUNTED, *STUDY_FIELDS), query)
    else:
        keys, more = page(queryset.values_list("pk", flat=True), query)
        page_rows = counts.with_counted(Study.objects.filter(pk__in=keys)).values("pk", counts.COUNTED, *STUDY_FIELDS)
        found = {row["pk"]: row for row in page_rows}
        rows = [found[key] for key in keys if key in found]
    counts.exact_rows(rows, study=("pk", "number_of_instances"))
    return rows, more


# --- Answers ------------------------------------------------------------------

OPTIONAL_STUDY = {"00081030", "00080080", "00081010", "00100021"}
OPTIONAL_SERIES = {"00180015", "00080070", "00081010", "00080080"}


# What a study answer is built from; read with values() so a page of 1000 studies costs
# no model instances.
STUDY_FIELDS = (
    "study_uid",
    "study_date",
    "study_time",
    "accession_number",
    "modalities_in_study",
    "referring_physician",
    "study_id",
    "description",
    "institution_name",
    "station_name",
    "number_of_series",
    "number_of_instances",
    "patient__patient_id",
    "patient__issuer",
    "patient__name_alphabetic",
    "patient__name_ideographic",
    "patient__name_phonetic",
    "patient__birth_date",
    "patient__sex",
)


def study_row(study: Study) -> dict[str, Any]:
    """The STUDY_FIELDS of a study instance (with its patient), as values() gives them."""
    row: dict[str, Any] = {}
    for name in STUDY_FIELDS:
        target: Any = study
        for part in name.split("__"):
            target = getattr(target, part)
        row[name] = target
    return row


def study_attributes(row: dict[str, Any], url: str, query: Query) -> dj.JsonDataset:
    result: dj.JsonDataset = {
        "00080020": dj.da(row["study_date"]),
        "00080030": dj.tm(row["study_time"]),
        "00080050": dj.element("SH", row["accession_number"]),
        "00080056": dj.element("CS", "ONLINE"),
        "00080061": dj.multi("CS", row["modalities_in_study"]),
        "00080090": dj.person_name_from_whole(row["referring_physician"]),
        "00081190": dj.element("UR", url),
        "00100010": dj.person_name(
            row["patient__name_alphabetic"], row["patient__name_ideographic"], row["patient__name_phonetic"]
        ),
        "00100020": dj.element("LO", row["patient__patient_id"]),
        "00100030": dj.da(row["patient__birth_date"]),
        "00100040": dj.element("CS", row["patient__sex"]),
        "0020000D": dj.element("UI", row["study_uid"]),
        "00200010": dj.element("SH", row["study_id"]),
        "00201206": dj.integer("IS", row["number_of_series"]),
        "00201208": dj.integer("IS", row["number_of_instances"]),
    }
    optional = {
        "00081030": lambda: dj.element("LO", row["description"]),
        "00080080": lambda: dj.element("LO", row["institution_name"]),
        "00081010": lambda: dj.element("SH", row["station_name"]),
        "00100021": lambda: dj.element("LO", row["patient__issuer"]),
    }
    _add_optional(result, optional, query)
    return result


def series_attributes(series: Series, url: str, query: Query) -> dj.JsonDataset:
    result: dj.JsonDataset = {
        "00080056": dj.element("CS", "ONLINE"),
        "00080060": dj.element("CS", series.modality),
        "0008103E": dj.element("LO", series.description),
        "00081190": dj.element("UR", url),
        "0020000D": dj.element("UI", series.study.study_uid),
        "0020000E": dj.element("UI", series.series_uid),
        "00200011": dj.integer("IS", series.series_number),
        "00201209": dj.integer("IS", series.number_of_instances),
    }
    optional = {
        "00180015": lambda: dj.element("CS", series.body_part_examined),
        "00080070": lambda: dj.element("LO", series.manufacturer),
        "00081010": lambda: dj.element("SH", series.station_name),
        "00080080": lambda: dj.element("LO", series.institution_name),
    }
    _add_optional(result, optional, query)
    return result


def instance_attributes(instance: Instance, url: str) -> dj.JsonDataset:
    return {
        "00080016": dj.element("UI", instance.sop_class_uid),
        "00080018": dj.element("UI", instance.sop_instance_uid),
        "00080056": dj.element("CS", "ONLINE"),
        "00081190": dj.element("UR", url),
        "00083002": dj.element("UI", instance.transfer_syntax_uid),
        "0020000D": dj.element("UI", instance.series.study.study_uid),
        "0020000E": dj.element("UI", instance.series.series_uid),
        "00200013": dj.integer("IS", instance.instance_number),
        "00280008": dj.integer("IS", instance.number_of_frames),
        "00280010": dj.integer("US", instance.rows),
        "00280011": dj.integer("US", instance.columns),
    }


def _add_optional(result: dj.JsonDataset, optional: dict[str, Callable[[], dj.Element]], query: Query) -> None:
    for key, build in optional.items():
        if query.include_all or key in query.include:
            result[key] = build()


def named(attributes: dj.JsonDataset, query: Query) -> dj.JsonDataset:
    """Those of a higher level's `attributes` that the query names (by includefield or as a
    matching key): a search within a study or series answers with them too (PS3.18
    10.6.3.3.2 and 10.6.3.3.3: "Series or Study Level Attributes passed as includefield
    parameters")."""
    return {key: value for key, value in attributes.items() if key in query.include}


def sorted_dataset(dataset: dj.JsonDataset) -> dj.JsonDataset:
    return dict(sorted(dataset.items()))
