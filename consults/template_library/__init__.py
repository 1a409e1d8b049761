"""The report-template library the platform ships, versioned as data.

Each released version is a frozen module (v1, v2...) installed by its own data migration
through `install`. A template the hospital has not touched is brought up to the new text;
one it has edited (its text no longer matches the digest stored when it was installed) or
switched off keeps the hospital's text and state. See docs/report-templates.md.

`install` takes the model classes, so that migrations pass their historical models."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

LANGUAGES = ("zh-hans", "en")


def digest(name: str, findings: str, impression: str) -> str:
    """What a template said when installed: the library compares it with what it says now."""
    text = "\x1f".join((name, findings, impression))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def install(
    template_model: Any, body_part_model: Any, library: Iterable[dict[str, Any]], version: int
) -> dict[str, int]:
    """Install or upgrade the library's templates; returns counts of what happened."""
    counts = {"created": 0, "updated": 0, "kept": 0, "current": 0}
    parts_by_code = {part.code: part for part in body_part_model.objects.all()}
    for entry in library:
        parts = [parts_by_code[code] for code in entry["parts"] if code in parts_by_code]
        for language in LANGUAGES:
            label, name, findings, impression = entry[language]
            row = template_model.objects.filter(library_key=entry["key"], language=language).first()
            if row is None:
                row = template_model.objects.create(
                    library_key=entry["key"],
                    library_version=version,
                    library_digest=digest(name, findings, impression),
                    language=language,
                    kind=entry["kind"],
                    body_part=label,
                    name=name,
                    findings=findings,
                    impression=impression,
                )
                row.parts.set(parts)
                counts["created"] += 1
            elif (row.library_version or 0) >= version:
                counts["current"] += 1
            elif digest(row.name, row.findings, row.impression) != row.library_digest:
                # The hospital's own wording: theirs to keep. Its version stays, so the
                # template list shows which version it was adapted from.
                counts["kept"] += 1
            else:
                row.library_version = version
                row.library_digest = digest(name, findings, impression)
                row.kind, row.body_part, row.name = entry["kind"], label, name
                row.findings, row.impression = findings, impression
                row.save()
                row.parts.set(parts)
                counts["updated"] += 1
    return counts
