"""Django admin for the people and places of the platform.

Who gets in: the admin is for staff (is_staff), as Django has it. Users with the
administrator role are made staff when saved here, and get every permission on the
models registered below without per-model permission rows; anyone else needs Django
permissions as usual. The audit trail is read-only for everyone.

Every addition, change and deletion made here is written to the audit trail by
`AuditedAdmin`, which the other apps' editable admins use as well."""

from __future__ import annotations

import datetime
import decimal
import uuid
from collections.abc import Iterable
from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db.models import Model
from django.http import HttpRequest
from django.urls import reverse
from django.utils.translation import gettext_lazy as _

from facilities import auditlabels
from facilities.forms import AdminLoginForm, AdminPasswordChangeForm
from facilities.models import ApplicationEntity, AuditEvent, Facility, Modality, RosterShift, User
from facilities.names import PinyinModelChoiceField, by_pinyin
from facilities.services import PASSWORD_CHANGED, audit

admin.site.site_header = _("云影 Yunying")
admin.site.site_title = _("云影 Yunying")
admin.site.index_title = _("系统管理")
admin.site.login_form = AdminLoginForm

# Not administered here: roles are a field of the user, not groups; API tokens are made and
# revoked by their owners on their "API tokens" page, and shown only once. Either admin
# would be a way to change who may do what without an audit entry. (Knox's own token
# admin registers nothing: its model is swapped for facilities.ApiToken.)
if admin.site.is_registered(Group):
    admin.site.unregister(Group)


class AdminPasswordChangeView(auth_views.PasswordChangeView):
    """The admin's page for changing one's own password, with the site page's form: the old
    password's tries are counted like logins (facilities.forms.ThrottledPasswordChangeForm)."""

    form_class = AdminPasswordChangeForm

    def get_form_kwargs(self) -> dict[str, Any]:
        return {**super().get_form_kwargs(), "request": self.request}


def audited_password_change(request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
    """Django's admin password change (AdminSite.password_change) with the throttled form,
    audited like the site's own page (facilities.views.PasswordChangeView). A successful
    change is the redirect to "done"."""
    request.current_app = admin.site.name
    response = AdminPasswordChangeView.as_view(
        success_url=reverse("admin:password_change_done", current_app=admin.site.name),
        extra_context={**admin.site.each_context(request), **(extra_context or {})},
    )(request)
    if request.method == "POST" and response.status_code == 302:
        audit(PASSWORD_CHANGED, request=request, obj=request.user, via="admin")  # type: ignore[arg-type]
    return response


# The site builds its URLs from this attribute when the URLconf is loaded, after this module.
admin.site.password_change = audited_password_change  # type: ignore[method-assign]


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


# What the audit records of a form field whose value must never be kept (passwords).
HIDDEN = "******"


def _plain(value: Any) -> Any:
    """A form value as JSON the audit trail can keep: objects by their name."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID | Model):
        return str(value)
    if isinstance(value, Iterable):
        return [_plain(item) for item in value]
    return str(value)


def _initial(form: forms.BaseForm, name: str) -> Any:
    """A field's value before the change. A foreign key's initial value is its primary key;
    it is looked up so that the record names the facility, not its row number."""
    value = form.get_initial_for_field(form.fields[name], name)
    field = form.fields[name]
    if isinstance(field, forms.ModelChoiceField) and not isinstance(field, forms.ModelMultipleChoiceField):
        try:
            return field.to_python(value)
        except ValidationError:
            return value
    return value


def form_changes(form: forms.BaseForm, *, adding: bool) -> dict[str, Any]:
    """{field: [before, after]} for each changed field of a bound, valid form ({field:
    after} when adding); passwords are named but never kept."""
    changes: dict[str, Any] = {}
    for name in form.changed_data:
        if "password" in name:
            changes["password"] = HIDDEN
            continue
        after = _plain(form.cleaned_data.get(name))
        changes[name] = after if adding else [_plain(_initial(form, name)), after]
    return changes


def formset_changes(formsets: Iterable[Any] | None) -> list[dict[str, Any]]:
    """The rows added, changed and deleted through the inlines of one admin form."""
    rows: list[dict[str, Any]] = []
    for formset in formsets or ():
        new = {id(obj) for obj in getattr(formset, "new_objects", ())}
        deleted = {id(form) for form in formset.deleted_forms} if formset.can_delete else set()
        model = formset.model._meta.label_lower
        for form in formset.forms:
            if id(form) in deleted:
                rows.append({"model": model, "object": str(form.instance), "action": "deleted"})
            elif form.has_changed():
                adding = id(form.instance) in new
                rows.append(
                    {
                        "model": model,
                        "object": str(form.instance),
                        "action": "added" if adding else "changed",
                        "changes": form_changes(form, adding=adding),
                    }
                )
    return rows


class AuditedAdmin:
    """Writes every addition, change and deletion made through a model admin to the audit
    trail: who, when, from which address, the object, and each field's value before and
    after (inlines included). Django's own admin log is kept as well; it is the audit trail
    that an administrator searches and that nobody can edit.

    The action is `<app>.<model>.added|changed|deleted`, e.g. `billing.priceschedule.changed`.
    Put it first among the bases of an editable ModelAdmin."""

    _AUDIT_CHANGES = "_yunying_admin_changes"

    def construct_change_message(
        self, request: HttpRequest, form: forms.BaseForm, formsets: Any, add: bool = False
    ) -> Any:
        # Django calls this right before log_addition/log_change, with the bound form that
        # knows both the old and the new values; the log methods only get the object.
        changes: dict[str, Any] = {"changes": form_changes(form, adding=add)}
        inlines = formset_changes(formsets)
        if inlines:
            changes["inlines"] = inlines
        setattr(request, self._AUDIT_CHANGES, changes)
        return super().construct_change_message(request, form, formsets, add)  # type: ignore[misc]

    def _audit(self, request: HttpRequest, obj: Model, verb: str, **detail: Any) -> None:
        meta = obj._meta
        audit(f"{meta.app_label}.{meta.model_name}.{verb}", request=request, obj=obj, via="admin", **detail)

    def log_addition(self, request: HttpRequest, obj: Model, message: Any) -> Any:
        entry = super().log_addition(request, obj, message)  # type: ignore[misc]
        self._audit(request, obj, "added", object=str(obj), **getattr(request, self._AUDIT_CHANGES, {}))
        return entry

    def log_change(self, request: HttpRequest, obj: Model, message: Any) -> Any:
        entry = super().log_change(request, obj, message)  # type: ignore[misc]
        self._audit(request, obj, "changed", object=str(obj), **getattr(request, self._AUDIT_CHANGES, {}))
        return entry

    def log_deletions(self, request: HttpRequest, queryset: Any) -> Any:
        entries = super().log_deletions(request, queryset)  # type: ignore[misc]
        for obj in queryset:
            # Called before the rows go. A facility being deleted is not named as the
            # event's facility: the reference would protect the row from its deletion.
            meta = obj._meta
            audit(
                f"{meta.app_label}.{meta.model_name}.deleted",
                request=request,
                obj=obj,
                facility=None if isinstance(obj, Facility) else getattr(obj, "facility", None),
                via="admin",
                object=str(obj),
            )
        return entries


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
class FacilityAdmin(AuditedAdmin, AdministratorPermissions, admin.ModelAdmin):
    list_display = ["name", "name_en", "short_name", "pinyin", "code", "kind", "level", "ae_titles", "is_active"]
    list_filter = ["kind", "level", "is_active"]
    search_fields = ["name", "name_en", "short_name", "pinyin", "code"]
    inlines = [ModalityInline]

    def get_queryset(self, request: HttpRequest) -> Any:
        return super().get_queryset(request).prefetch_related("modalities")

    @admin.display(description=_("AE 标题"))
    def ae_titles(self, facility: Facility) -> str:
        return ", ".join(m.ae_title for m in facility.modalities.all())


@admin.register(Modality)
class ModalityAdmin(AuditedAdmin, AdministratorPermissions, admin.ModelAdmin):
    list_display = ["ae_title", "facility", "kind", "manufacturer", "model_name", "host", "port", "is_active"]
    list_filter = ["kind", "is_active", "facility"]
    list_select_related = ["facility"]
    search_fields = ["ae_title", "facility__name", "facility__pinyin", "manufacturer", "model_name"]
    ordering = ["ae_title"]


@admin.register(ApplicationEntity)
class ApplicationEntityAdmin(AuditedAdmin, AdministratorPermissions, admin.ModelAdmin):
    """Who may connect to the receiver and for what. Workstations and archives are added
    here; a console's entity is made by its modality (检查设备), which owns its AE title,
    facility, address and state: here only its permissions change."""

    list_display = [
        "ae_title",
        "facility",
        "role",
        "description",
        "host",
        "port",
        "may_store",
        "may_query",
        "may_retrieve",
        "is_move_destination",
        "is_active",
    ]
    list_filter = ["role", "may_query", "may_retrieve", "is_move_destination", "is_active", "facility"]
    list_select_related = ["facility"]
    search_fields = ["ae_title", "description", "host", "facility__name", "facility__pinyin"]
    ordering = ["ae_title"]
    fields = [
        "ae_title",
        "role",
        "facility",
        "modality",
        "description",
        "host",
        "port",
        "may_store",
        "may_query",
        "may_retrieve",
        "is_move_destination",
        "is_active",
    ]
    CONSOLE_OWNED = ["ae_title", "role", "facility", "modality", "host", "port", "is_active"]

    def get_readonly_fields(self, request: HttpRequest, obj: Model | None = None) -> Any:
        if isinstance(obj, ApplicationEntity) and obj.modality_id is not None:
            return self.CONSOLE_OWNED
        return ["modality"]

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, change, **kwargs)
        role: Any = form.base_fields.get("role")
        if role is not None:
            # A console is registered as a modality (检查设备), which makes its entity.
            role.choices = [c for c in role.choices if c[0] != ApplicationEntity.Role.CONSOLE]
        return form


@admin.register(User)
class UserAdmin(AuditedAdmin, AdministratorPermissions, BaseUserAdmin):
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


class RadiologistListFilter(admin.RelatedFieldListFilter):
    """The roster's filter by radiologist, the names by pinyin as everywhere else."""

    def field_choices(self, field: Any, request: HttpRequest, model_admin: Any) -> Any:
        people = User.objects.filter(role=User.Role.RADIOLOGIST)
        return [(str(person.pk), str(person)) for person in by_pinyin(people)]


@admin.register(RosterShift)
class RosterShiftAdmin(AuditedAdmin, AdministratorPermissions, admin.ModelAdmin):
    list_display = ["radiologist", "starts_at", "ends_at", "is_lead"]
    list_filter = ["is_lead", ("radiologist", RadiologistListFilter)]
    list_select_related = ["radiologist"]
    date_hierarchy = "starts_at"
    # The latest first: the model's order (oldest first) opened the list on the demo's
    # first shifts, years back, and the roster being planned was pages away.
    ordering = ["-starts_at"]

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "radiologist":
            # Listed by the pinyin of the name shown (李 before 刘 before 王), not by username.
            kwargs["form_class"] = PinyinModelChoiceField
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


class AuditActionFilter(admin.SimpleListFilter):
    """The actions by their names, not their codes."""

    title = _("操作")
    parameter_name = "action"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        codes = AuditEvent.objects.order_by("action").values_list("action", flat=True).distinct()
        return [(code, auditlabels.action_label(code)) for code in codes]

    def queryset(self, request: HttpRequest, queryset: Any) -> Any:
        return queryset.filter(action=self.value()) if self.value() else queryset


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ["at", "who", "action_name", "object_type", "object_id", "facility", "address"]
    list_filter = [AuditActionFilter, "facility"]
    list_select_related = ["facility", "actor"]
    search_fields = ["object_id", "actor_name", "actor__display_name", "action"]
    date_hierarchy = "at"

    @admin.display(description=_("用户"), ordering="actor_name")
    def who(self, event: AuditEvent) -> str:
        """The person's name with the username they signed in with, as on the audit page."""
        name = event.actor.display_name if event.actor is not None else ""
        if name and event.actor_name:
            return auditlabels.with_username(name, event.actor_name)
        return event.actor_name or name or "—"

    @admin.display(description=_("操作"), ordering="action")
    def action_name(self, event: AuditEvent) -> str:
        return auditlabels.action_label(event.action)
