"""Django admin for the people and places of the platform.

Who gets in: the admin is for staff (is_staff), as Django has it. Users with the
administrator role are made staff when saved here, and get every permission on the
models registered below without per-model permission rows; anyone else needs Django
permissions as usual. The audit trail is read-only for everyone."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.db.models import Model
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

from facilities.forms import AdminLoginForm
from facilities.models import AuditEvent, Facility, Modality, RosterShift, User

admin.site.site_header = _("云影 Yunying")
admin.site.site_title = _("云影 Yunying")
admin.site.index_title = _("系统管理")
admin.site.login_form = AdminLoginForm


def is_platform_administrator(user: Any) -> bool:
    return bool(
        user.is_active
        and user.is_staff
        and (user.is_superuser or getattr(user, "role", None) == User.Role.ADMINISTRATOR)
    )


class AdministratorPermissions:
    """Grants platform administrators every permission on a model admin or inline."""

    def has_module_permission(self, request: HttpRequest) -> bool:
        return is_platform_administrator(request.user) or super().has_module_permission(request)  # type: ignore[misc]

    def has_view_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return is_platform_administrator(request.user) or super().has_view_permission(request, obj)  # type: ignore[misc]

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return is_platform_administrator(request.user) or super().has_add_permission(request, *args)  # type: ignore[misc]

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return is_platform_administrator(request.user) or super().has_change_permission(request, obj)  # type: ignore[misc]

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return is_platform_administrator(request.user) or super().has_delete_permission(request, obj)  # type: ignore[misc]


class ReadOnlyAdmin(AdministratorPermissions, admin.ModelAdmin):
    """For append-only records: they can be looked at, never added, changed or deleted here."""

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


class ModalityInline(AdministratorPermissions, admin.TabularInline):
    model = Modality
    extra = 0
    fields = ["kind", "ae_title", "manufacturer", "model_name", "host", "port", "is_active"]


@admin.register(Facility)
class FacilityAdmin(AdministratorPermissions, admin.ModelAdmin):
    list_display = ["name", "short_name", "pinyin", "code", "kind", "level", "ae_titles", "is_active"]
    list_filter = ["kind", "level", "is_active"]
    search_fields = ["name", "short_name", "pinyin", "code"]
    inlines = [ModalityInline]

    def get_queryset(self, request: HttpRequest) -> Any:
        return super().get_queryset(request).prefetch_related("modalities")

    @admin.display(description=_("AE 标题"))
    def ae_titles(self, facility: Facility) -> str:
        return ", ".join(m.ae_title for m in facility.modalities.all())


@admin.register(Modality)
class ModalityAdmin(AdministratorPermissions, admin.ModelAdmin):
    list_display = ["ae_title", "facility", "kind", "manufacturer", "model_name", "host", "port", "is_active"]
    list_filter = ["kind", "is_active", "facility"]
    list_select_related = ["facility"]
    search_fields = ["ae_title", "facility__name", "facility__pinyin", "manufacturer", "model_name"]
    ordering = ["ae_title"]


@admin.register(User)
class UserAdmin(AdministratorPermissions, BaseUserAdmin):
    list_display = ["username", "display_name", "role", "facility", "reads_ct", "reads_dr", "is_senior", "is_active"]
    list_filter = ["role", "facility", "is_senior", "is_active", "is_staff"]
    list_select_related = ["facility"]
    search_fields = ["username", "display_name", "first_name", "last_name", "email"]
    ordering = ["role", "username"]
    fieldsets = (
        (None, {"fields": ("username", "password")}),
        (_("角色与机构"), {"fields": ("role", "facility", "display_name", "reads_ct", "reads_dr", "is_senior")}),
        (_("联系方式"), {"fields": ("first_name", "last_name", "email")}),
        (_("权限"), {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")}),
        (_("重要日期"), {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = (
        (
            None,
            {
                "classes": ("wide",),
                "fields": ("username", "password1", "password2", "role", "facility", "display_name"),
            },
        ),
    )

    def get_readonly_fields(self, request: HttpRequest, obj: Model | None = None) -> Any:
        readonly = list(super().get_readonly_fields(request, obj))
        if not request.user.is_superuser:
            # An administrator manages accounts but cannot hand out superuser powers.
            readonly += ["is_superuser", "groups", "user_permissions"]
        return readonly

    def save_model(self, request: HttpRequest, obj: User, form: Any, change: bool) -> None:
        if obj.role == User.Role.ADMINISTRATOR:
            obj.is_staff = True
        super().save_model(request, obj, form, change)


@admin.register(RosterShift)
class RosterShiftAdmin(AdministratorPermissions, admin.ModelAdmin):
    list_display = ["radiologist", "starts_at", "ends_at", "is_lead"]
    list_filter = ["is_lead", "radiologist"]
    list_select_related = ["radiologist"]
    date_hierarchy = "starts_at"


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ["at", "actor_name", "action", "object_type", "object_id", "facility", "address"]
    list_filter = ["action", "facility"]
    list_select_related = ["facility"]
    search_fields = ["object_id", "actor_name", "action"]
    date_hierarchy = "at"
