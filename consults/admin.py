"""Consults and reports are deliberately not in the Django admin: every change to them is a
clinical state change that must go through consults.services and leave an audit entry, and
administrators are not shown patients' reports. Radiologists work on them in the worklist.

What is here is the department's own wording, which holds no patient data: the report
templates (the library's, which the department reviews and adapts, and its own) and the
department-wide phrases. Radiologists' personal phrases are theirs, on their phrases page."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

from consults.models import Phrase, ReportTemplate
from facilities.admin import AdministratorPermissions, AuditedAdmin


@admin.register(ReportTemplate)
class ReportTemplateAdmin(AuditedAdmin, AdministratorPermissions, admin.ModelAdmin):
    list_display = ["name", "kind", "body_part", "language", "library_key", "library_version", "edited", "is_active"]
    list_filter = ["kind", "language", "is_active", "parts"]
    search_fields = ["name", "body_part", "findings", "impression", "library_key"]
    filter_horizontal = ["parts"]
    readonly_fields = ["library_key", "library_version", "author"]
    fields = [
        "name",
        "kind",
        "body_part",
        "parts",
        "language",
        "findings",
        "impression",
        "is_active",
        "library_key",
        "library_version",
        "author",
    ]

    @admin.display(boolean=True, description=_("科室已修改"))
    def edited(self, obj: ReportTemplate) -> bool:
        return obj.is_edited


@admin.register(Phrase)
class DepartmentPhraseAdmin(AuditedAdmin, AdministratorPermissions, admin.ModelAdmin):
    """The department's phrases, offered to every radiologist beside their own."""

    list_display = ["shortcut", "text", "kind", "language", "is_active"]
    list_filter = ["kind", "language", "is_active"]
    search_fields = ["shortcut", "text"]
    fields = ["shortcut", "text", "kind", "language", "is_active"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Phrase]:
        return super().get_queryset(request).filter(owner__isnull=True)

    def save_model(self, request: HttpRequest, obj: Phrase, form: Any, change: bool) -> None:
        obj.owner = None
        obj.shortcut = obj.shortcut.strip().lower()
        super().save_model(request, obj, form, change)
