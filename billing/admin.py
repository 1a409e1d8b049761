"""Admin for price schedules (editable) and the savings ledger (read-only: append-only by design)."""

from __future__ import annotations

from django.contrib import admin

from billing.models import LedgerEntry, PriceItem, PriceSchedule
from facilities.admin import AdministratorPermissions, AuditedAdmin, ReadOnlyAdmin


class PriceItemInline(AdministratorPermissions, admin.TabularInline):
    model = PriceItem
    extra = 0
    fields = ["exam_kind", "level", "item_code", "item_name", "price_per_part"]


@admin.register(PriceSchedule)
class PriceScheduleAdmin(AuditedAdmin, AdministratorPermissions, admin.ModelAdmin):
    list_display = ["name", "code", "effective_from", "effective_to", "published_on"]
    search_fields = ["name", "code"]
    inlines = [PriceItemInline]


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdmin):
    list_display = [
        "exam_date",
        "facility",
        "exam_kind",
        "body_parts",
        "county_price",
        "township_price",
        "saving",
        "schedule",
        "reverses",
    ]
    list_filter = ["exam_kind", "facility", "schedule"]
    list_select_related = ["facility", "schedule", "reverses"]
    date_hierarchy = "exam_date"
    show_full_result_count = False
