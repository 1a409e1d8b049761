"""The association log in the Django admin: administrators read it; nobody edits it."""

from __future__ import annotations

from django.contrib import admin

from dicomnode.models import AssociationLog
from facilities.admin import ReadOnlyAdmin


@admin.register(AssociationLog)
class AssociationLogAdmin(ReadOnlyAdmin):
    list_display = [
        "started_at",
        "calling_ae_title",
        "peer_address",
        "modality",
        "outcome",
        "reason",
        "instances_stored",
        "instances_duplicate",
        "instances_conflict",
        "instances_failed",
        "bytes_received",
        "ended_at",
    ]
    list_filter = ["outcome", "tls", "modality__facility"]
    list_select_related = ["modality", "modality__facility"]
    search_fields = ["calling_ae_title", "peer_address", "reason"]
    date_hierarchy = "started_at"
