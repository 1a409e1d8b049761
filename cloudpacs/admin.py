"""The archive's index is written only by ingestion (cloudpacs.services), so it is not in the
Django admin: an edit here would let the index disagree with the files it describes.

What is here is read-only: the instances ingestion refused (ingest conflicts), for
administrators to follow up with the township."""

from __future__ import annotations

from django.contrib import admin
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from cloudpacs.models import IngestConflict
from facilities.admin import ReadOnlyAdmin


@admin.register(IngestConflict)
class IngestConflictAdmin(ReadOnlyAdmin):
    list_display = [
        "at",
        "reason",
        "facility",
        "ae_title",
        "channel",
        "patient_id",
        "study_uid",
        "association_link",
    ]
    list_filter = ["reason", "channel", "facility"]
    list_select_related = ["facility", "modality", "user"]
    search_fields = ["ae_title", "sop_instance_uid", "study_uid", "series_uid", "patient_id", "detail"]
    date_hierarchy = "at"
    readonly_fields = [
        "at",
        "reason",
        "channel",
        "facility",
        "modality",
        "ae_title",
        "user",
        "association_link",
        "sop_instance_uid",
        "study_uid",
        "series_uid",
        "patient_id",
        "detail",
    ]
    exclude = ["association"]

    @admin.display(description=_("连接记录"))
    def association_link(self, conflict: IngestConflict) -> str:
        if conflict.association is None:
            return "—"
        # By URL name: the archive does not import the receiver, which sits above it.
        try:
            url = reverse("admin:dicomnode_associationlog_changelist")
        except NoReverseMatch:
            return str(conflict.association)
        return format_html('<a href="{}?uuid={}">{}</a>', url, conflict.association, _("查看"))
