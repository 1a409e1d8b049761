"""The association log in the Django admin: administrators read it; nobody edits it."""

from __future__ import annotations

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

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
        "conflicts_link",
        "instances_failed",
        "bytes_received",
        "ended_at",
    ]
    list_filter = ["outcome", "tls", "modality__facility"]
    list_select_related = ["modality", "modality__facility"]
    search_fields = ["calling_ae_title", "peer_address", "reason"]
    date_hierarchy = "started_at"

    @admin.display(description=_("冲突"), ordering="instances_conflict")
    def conflicts_link(self, log: AssociationLog) -> str:
        """The count, linked to the ingest conflicts recorded during the association."""
        if not log.instances_conflict:
            return "0"
        url = reverse("admin:cloudpacs_ingestconflict_changelist")
        return format_html('<a href="{}?association={}">{}</a>', url, log.uuid, log.instances_conflict)
