"""Consults' change feed: every step that changes a consult publishes one change in its own
transaction, and billing's rollup follows the feed, idempotently and resumably, to the
same rows a rebuild from the raw rows gives (and to the raw-row oracle's figures)."""

from __future__ import annotations

import ast
import importlib
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.apps import apps
from django.db import transaction
from django.utils import timezone

from billing import dashboards, rollup, tasks
from billing.dashboards import Filters
from billing.models import (
    BilledPatients,
    DailyRollup,
    MonthlyReaderTurnaround,
    MonthlyRollup,
    MonthlyTownshipRollup,
    MonthlyTownshipTurnaround,
    RollupCursor,
    TownshipTurnaroundSpan,
)
from billing.reports.travel import travel_raw
from billing.reports.workload import within_limit_raw, workload_raw
from billing.services import ensure_shaanxi_2021_schedule
from consults import changes, workflow
from consults.models import Consult, ConsultChange, Priority
from consults.services import request_consult
from facilities.models import ExamKind, User
from facilities.services import audit
from tests.factories import make_consult, make_study, make_user
from tests.test_admin_reports import assert_same_work, travel_table
from tests.test_dashboards import make_exam
from tests.test_dashboards_rollup import assert_same_rows, raw_savings, raw_volume, rolled_volume

ROOT = Path(__file__).resolve().parents[1]
ROLLUP_TABLES = (
    DailyRollup,
    MonthlyRollup,
    MonthlyTownshipTurnaround,
    MonthlyReaderTurnaround,
    MonthlyTownshipRollup,
    TownshipTurnaroundSpan,
    BilledPatients,
)


def snapshot() -> dict[str, list[tuple[Any, ...]]]:
    """Every rollup table's rows without their ids, floats to 6 places (a day summed alone
    or within its month adds the same values in another order)."""

    def value(v: Any) -> Any:
        if isinstance(v, float):
            return round(v, 6)
        if isinstance(v, memoryview):
            return bytes(v)
        return v

    return {
        model.__name__: sorted(
            (tuple(value(v) for k, v in sorted(row.items()) if k != "id") for row in model.objects.values()), key=repr
        )
        for model in ROLLUP_TABLES
    }


def rebuilt() -> dict[str, list[tuple[Any, ...]]]:
    """The rollup as a rebuild from the raw rows leaves it, without keeping the rebuild."""
    with transaction.atomic():
        rollup.rebuild()
        rows = snapshot()
        transaction.set_rollback(True)
    return rows


def assert_rollup_is_the_raw_rows() -> None:
    assert snapshot() == rebuilt()
    rolled, raw = dashboards.turnaround(Filters()), dashboards.turnaround(Filters(), source="raw")
    assert_same_rows(
        [rolled.total, *rolled.by_township, *rolled.by_radiologist], [raw.total, *raw.by_township, *raw.by_radiologist]
    )
    assert rolled_volume(Filters()) == raw_volume(Filters())
    saved = dashboards.savings(Filters()).total
    assert (saved.entries, saved.body_parts, saved.saving) == raw_savings(Filters())
    # The administrators' reports read the rollup's signing times, priorities and patients.
    assert_same_work(dashboards.workload(Filters()), workload_raw(Filters()))
    now = timezone.now()
    assert dashboards.within_limit(Filters(), now=now) == within_limit_raw(Filters(), now=now)
    assert travel_table(dashboards.travel(Filters())) == travel_table(travel_raw(Filters()))


def published(consult: Consult) -> list[str]:
    return list(ConsultChange.objects.filter(consult=consult).order_by("pk").values_list("change", flat=True))


def reader(name: str, **fields: Any) -> User:
    return make_user(User.Role.RADIOLOGIST, None, username=name, display_name=name, **fields)


@pytest.fixture
def start():
    return timezone.now().replace(microsecond=0) - timedelta(hours=6)


# ---------------------------------------------------------------------------- publishing


def test_each_step_publishes_its_change_and_the_followed_rollup_equals_a_rebuild(
    township, ct_modality, technologist, start
) -> None:
    ensure_shaanxi_2021_schedule()
    li, wang = reader("li"), reader("wang")
    study = make_study(township, ct_modality, last_received_at=start, study_date=date(2025, 9, 1))
    minute = timedelta(minutes=1)
    consult = request_consult(study, technologist, body_parts=2, now=start + minute)
    other = make_exam(township, ExamKind.CT, date(2025, 9, 1), 35, wang)  # a neighbour on the same day
    steps = [
        (lambda: None, "created"),
        (lambda: workflow.claim_consult(consult, li, start + 3 * minute), "assigned"),
        (lambda: workflow.release_consult(consult, li, start + 4 * minute), "released"),
        (lambda: workflow.correct_request(consult, technologist, priority=Priority.URGENT), "corrected"),
        (lambda: workflow.reassign_consult(consult, to=wang, now=start + 6 * minute), "assigned"),
        (lambda: workflow.open_consult(consult, wang, start + 8 * minute), "opened"),
        (lambda: workflow.sign_final(consult, wang, "所见", "意见", now=start + 30 * minute), "signed"),
        (lambda: workflow.mark_delivered(consult, channel="dicom", now=start + 31 * minute), "delivered"),
    ]
    for step, change in steps:
        step()
        assert published(consult)[-1:] == [change]
        assert rollup.follow_consult_changes() >= 1
        assert not ConsultChange.objects.exists()
        assert_rollup_is_the_raw_rows()
    consult.refresh_from_db()
    row = DailyRollup.objects.get(radiologist=wang, day=date(2025, 9, 1), facility=township, kind=ExamKind.CT)
    assert (row.exams, row.signed, row.deliver_n) == (2, 2, 2)
    # Then billed: the ledger's own refresh, in its transaction.
    tasks.record_savings_for_signed_consults()
    assert_rollup_is_the_raw_rows()
    assert dashboards.savings(Filters()).total.saving == Decimal("90.00")  # 2 parts + 1, 30 yuan each
    assert other.pk


def test_a_step_that_fails_publishes_nothing(township, ct_modality) -> None:
    consult = make_consult(township, make_study(township, ct_modality))
    li = reader("li")
    workflow.claim_consult(consult, li)
    before = published(consult)
    with pytest.raises(workflow.WorkflowError):
        workflow.sign_final(consult, li, "所见", "  ")  # no impression: refused, rolled back
    assert published(consult) == before


def test_the_deadline_check_publishes_the_limits_it_stores_and_its_escalations(township, ct_modality, start) -> None:
    consult = make_consult(township, make_study(township, ct_modality), arrived_at=start)
    assert consult.due_at is None
    workflow.check_consult_deadlines(start + timedelta(days=3))
    assert published(consult)[:1] == ["due"]
    assert "escalated" in published(consult)


def function_calls(node: ast.AST) -> set[str]:
    names = set()
    for call in ast.walk(node):
        if isinstance(call, ast.Call):
            f = call.func
            names.add(f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", ""))
    return names


def changes_a_consult_row(function: ast.FunctionDef) -> bool:
    """Saves `consult`/`locked` or updates Consult rows through the manager."""
    for call in ast.walk(function):
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)):
            continue
        target = call.func.value
        if call.func.attr == "save" and isinstance(target, ast.Name) and target.id in ("consult", "locked"):
            return True
        if call.func.attr == "update" and "Consult.objects" in ast.unparse(target):
            return True
    return False


@pytest.mark.parametrize("module", ["consults/workflow.py", "consults/services.py"])
def test_every_function_that_changes_a_consults_row_publishes_a_change(module) -> None:
    tree = ast.parse((ROOT / module).read_text())
    functions = [node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)]
    changing = [f for f in functions if changes_a_consult_row(f)]
    assert changing, "the check found no change at all: it no longer reads the module right"
    silent = [f.name for f in changing if "publish" not in function_calls(f)]
    assert silent == []


# ---------------------------------------------------------------------------- following


@pytest.fixture
def signed_exams(township, other_township, ct_modality, radiologist) -> list[Consult]:
    ensure_shaanxi_2021_schedule()
    return [
        make_exam(township, ExamKind.CT, date(2025, 3, 3), 42, radiologist, parts=2),
        make_exam(township, ExamKind.CT, date(2025, 3, 31), 12, radiologist),
        make_exam(other_township, ExamKind.DR, date(2025, 4, 1), 20, None, signed=False),
    ]


def test_a_follow_that_fails_leaves_the_changes_for_the_next_run(signed_exams, monkeypatch) -> None:
    assert changes.pending() == 3

    def broken(days: Any) -> int:
        list(days)
        raise RuntimeError("the database went away")

    monkeypatch.setattr(rollup, "refresh_days", broken)
    with pytest.raises(RuntimeError):
        rollup.follow_consult_changes()
    assert changes.pending() == 3
    assert not DailyRollup.objects.exists()
    monkeypatch.undo()
    assert rollup.follow_consult_changes() == 3
    assert changes.pending() == 0
    assert_rollup_is_the_raw_rows()


def test_following_a_change_again_changes_nothing(signed_exams) -> None:
    rollup.follow_consult_changes(limit=2)  # in two batches of at most two
    once = snapshot()
    for consult in signed_exams:
        changes.publish(consult, changes.Change.MIGRATED)
    assert rollup.follow_consult_changes() == 3
    assert snapshot() == once
    assert_rollup_is_the_raw_rows()


def test_changes_are_taken_oldest_first_and_a_limit_below_one_is_refused(signed_exams) -> None:
    with changes.taken(2) as first:
        assert [c.consult_id for c in first] == [c.pk for c in signed_exams[:2]]
        assert all(isinstance(c.change, changes.Change) for c in first)
    assert changes.pending() == 1
    with pytest.raises(ValueError, match="at least one"), changes.taken(0):
        pass


# ---------------------------------------------------------------------------- the migration from the audit trail


def test_the_migration_turns_the_audit_events_not_yet_followed_into_changes(signed_exams) -> None:
    migration = importlib.import_module("billing.migrations.0010_follow_consult_changes")
    followed, waiting, _unsigned = signed_exams
    # The state the old code left: the rollup up to the cursor, events after it not followed.
    rollup.follow_consult_changes()
    ConsultChange.objects.all().delete()
    audit("consults.report.signed", obj=followed)
    RollupCursor.objects.create(name=migration.CURSOR, last_event_id=_last_event_id())
    Consult.objects.filter(pk=waiting.pk).update(delivered_at=None, status=Consult.Status.SIGNED)
    audit("consults.consult.corrected", obj=waiting)

    migration.to_change_feed(apps, None)
    assert list(ConsultChange.objects.values_list("consult_id", "change")) == [(waiting.pk, "migrated")]
    assert not RollupCursor.objects.filter(name=migration.CURSOR).exists()
    assert snapshot() != rebuilt()  # the change is still to be followed
    assert rollup.follow_consult_changes() == 1
    assert_rollup_is_the_raw_rows()


def _last_event_id() -> int:
    from facilities.models import AuditEvent

    return AuditEvent.objects.order_by("-pk").values_list("pk", flat=True).first() or 0


def test_the_migration_has_nothing_to_do_on_a_new_database(db) -> None:
    migration = importlib.import_module("billing.migrations.0010_follow_consult_changes")
    migration.to_change_feed(apps, None)
    assert not ConsultChange.objects.exists()
