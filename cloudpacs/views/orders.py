"""The township's register of exams (检查登记): register an exam for its consoles' worklist,
cancel one never performed, confirm or undo a link made by patient ID and date. For the
township's technologists; every page goes through facilities.access and is audited."""

from __future__ import annotations

from uuid import UUID

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from cloudpacs import orders
from cloudpacs.forms import OrderForm
from cloudpacs.models import Order
from facilities.access import TECHNOLOGIST, orders_for, role_required
from facilities.services import audit

RECENT = 50


@role_required(TECHNOLOGIST)
def order_list(request: HttpRequest) -> HttpResponse:
    user = request.user
    facility = user.facility  # type: ignore[union-attr]
    if facility is None:
        raise PermissionDenied
    form = OrderForm(request.POST or None, facility=facility)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            order = orders.register_order(
                user,  # type: ignore[arg-type]
                modality=data["modality"],
                patient_id=data["patient_id"],
                patient_name=data["patient_name"],
                patient_name_pinyin=data["patient_name_pinyin"],
                patient_sex=data["patient_sex"],
                patient_birth_date=data["patient_birth_date"],
                body_parts=list(data["body_parts"]),
                priority=data["priority"],
                clinical_history=data["clinical_history"],
                question=data["question"],
                scheduled_at=data["scheduled_at"],
                request=request,
            )
        except orders.OrderNotAllowed as refused:
            raise PermissionDenied(str(refused)) from refused
        except orders.OrderError as refused:
            form.add_error(None, str(refused))
        else:
            messages.success(request, _("已登记，检查号 %(number)s。") % {"number": order.accession_number})
            return redirect("orders:list")
    registered = orders_for(user)
    waiting = registered.filter(status__in=[Order.Status.SCHEDULED, Order.Status.IN_PROGRESS], study__isnull=True)
    to_confirm = registered.filter(matched_by=Order.Match.PATIENT_DATE, match_confirmed_at__isnull=True).exclude(
        study__isnull=True
    )
    recent = registered.exclude(pk__in=waiting.values("pk")).order_by("-created_at", "-id")[:RECENT]
    audit("cloudpacs.orders.viewed", request=request, object_type="cloudpacs.order", facility=facility)
    return render(
        request,
        "cloudpacs/orders.html",
        {
            "facility": facility,
            "form": form,
            "waiting": waiting.order_by("scheduled_at", "id"),
            "to_confirm": to_confirm,
            "recent": recent,
        },
        status=400 if request.method == "POST" else 200,
    )


def _act(request: HttpRequest, order_uuid: UUID, action: str) -> HttpResponse:
    order = get_object_or_404(orders_for(request.user), uuid=order_uuid)
    step = {"cancel": orders.cancel_order, "confirm": orders.confirm_match, "reject": orders.reject_match}[action]
    try:
        step(order, request.user, request=request)  # type: ignore[arg-type]
    except orders.OrderNotAllowed as refused:
        raise PermissionDenied(str(refused)) from refused
    except orders.OrderError as refused:
        messages.error(request, str(refused))
    else:
        done = {
            "cancel": _("已取消检查 %(number)s。"),
            "confirm": _("已确认 %(number)s 的关联。"),
            "reject": _("已解除 %(number)s 的关联，检查重新回到工作列表。"),
        }
        messages.success(request, done[action] % {"number": order.accession_number})
    return redirect("orders:list")


@role_required(TECHNOLOGIST)
@require_POST
def cancel(request: HttpRequest, order_uuid: UUID) -> HttpResponse:
    return _act(request, order_uuid, "cancel")


@role_required(TECHNOLOGIST)
@require_POST
def confirm(request: HttpRequest, order_uuid: UUID) -> HttpResponse:
    return _act(request, order_uuid, "confirm")


@role_required(TECHNOLOGIST)
@require_POST
def reject(request: HttpRequest, order_uuid: UUID) -> HttpResponse:
    return _act(request, order_uuid, "reject")
