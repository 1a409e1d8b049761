"""Proving a printed report genuine: the token behind its QR code, the digest of the
signed content, and the public page's second factor (the patient's birth date) with its
limits. Every look and every attempt is audited."""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from consults.models import Report, ReportVerification
from facilities.models import AuditEvent

VERIFIED = "consults.report.verified"
VERIFICATION_FAILED = "consults.report.verification_failed"
# Wrong birth dates allowed per report, and per client address, in the window.
MAX_FAILURES_PER_REPORT = 5
MAX_FAILURES_PER_ADDRESS = 20
FAILURE_WINDOW = timedelta(hours=1)


def signed_content(report: Report) -> dict[str, str]:
    """What a signature vouches for, as text: the exam (and the patient by ID), the report,
    and who signed it when. Addenda come later and are shown apart, each with its author.
    The patient's name and birth date are left out: a later study may correct them, which
    changes no report."""
    consult = report.consult
    study = consult.study
    patient = study.patient if study is not None else None
    return {
        "consult": str(consult.uuid),
        "facility": consult.facility.code,
        "kind": consult.kind,
        "exam_date": consult.exam_date.isoformat(),
        "body_parts": consult.body_part_names,
        "accession_number": study.accession_number if study is not None else "",
        "patient_id": patient.patient_id if patient is not None else "",
        "findings": report.findings,
        "impression": report.impression,
        "author": report.author.get_username(),
        "preliminary_by": report.preliminary_by.get_username() if report.preliminary_by else "",
        "signed_by": report.signed_by.get_username() if report.signed_by else "",
        "signed_at": report.signed_at.astimezone(UTC).isoformat(timespec="microseconds") if report.signed_at else "",
    }


def content_digest(report: Report) -> str:
    canonical = json.dumps(signed_content(report), ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def record_signature(report: Report, now: datetime) -> ReportVerification:
    """At signing, in the signing transaction: the token and the digest of what was signed."""
    return ReportVerification.objects.create(
        report=report, token=secrets.token_urlsafe(24), content_sha256=content_digest(report), created_at=now
    )


def verification_for(report: Report) -> ReportVerification:
    """The report's verification; one made now for a report signed before they existed."""
    existing = ReportVerification.objects.filter(report=report).first()
    if existing is not None:
        return existing
    verification, _created = ReportVerification.objects.get_or_create(
        report=report,
        defaults={
            "token": secrets.token_urlsafe(24),
            "content_sha256": content_digest(report),
            "created_at": timezone.now(),
            "at_signing": False,
        },
    )
    return verification


def verification_url(verification: ReportVerification) -> str:
    return settings.SITE_URL + reverse("consults:verify", args=[verification.token])


def find(token: str) -> ReportVerification | None:
    return (
        ReportVerification.objects.select_related(
            "report__consult__facility",
            "report__consult__study__patient",
            "report__author",
            "report__preliminary_by",
            "report__signed_by",
        )
        .filter(token=token)
        .first()
    )


def is_intact(verification: ReportVerification) -> bool:
    return secrets.compare_digest(verification.content_sha256, content_digest(verification.report))


@dataclass(frozen=True)
class Attempt:
    allowed: bool
    matched: bool = False


def check_birth_date(
    verification: ReportVerification, birth_date: date, address: str | None, now: datetime | None = None
) -> Attempt:
    """The second factor. Refused without looking once the report or the address has had
    too many wrong dates within the window; a patient without a recorded birth date cannot
    be unlocked this way."""
    now = now or timezone.now()
    since = now - FAILURE_WINDOW
    failures = AuditEvent.objects.filter(action=VERIFICATION_FAILED, at__gt=since)
    if failures.filter(object_id=str(verification.uuid)).count() >= MAX_FAILURES_PER_REPORT:
        return Attempt(allowed=False)
    if address and failures.filter(address=address).count() >= MAX_FAILURES_PER_ADDRESS:
        return Attempt(allowed=False)
    study = verification.report.consult.study
    recorded = study.patient.birth_date if study is not None else None
    return Attempt(allowed=True, matched=recorded is not None and recorded == birth_date)
