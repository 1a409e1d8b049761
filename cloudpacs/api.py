"""The orders API for a hospital information system (HIS): register an exam, list and read
a township's orders, cancel one never performed, and read the body-part vocabulary.

It authenticates like DICOMweb (an API token, or the web session; registering and
cancelling need a token that may write) and acts as the account's
technologist: the HIS of a township is given a technologist account of that township,
and sees and registers that township's orders only. The serializers validate; the work is
done by cloudpacs.orders, as for the web page."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.authentication import SessionAuthentication
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from cloudpacs import orders
from cloudpacs.forms import SEXES
from cloudpacs.models import BodyPart, Order, OrderPriority
from facilities.access import TECHNOLOGIST, has_role, orders_for
from facilities.models import Modality
from facilities.services import audit
from facilities.tokens import BearerAuthentication, TokenAuthentication, TokenScopePermission


# The site's API tokens (facilities.tokens), under names the schema extensions below find.
class _Token(TokenAuthentication):
    pass


class _Bearer(BearerAuthentication):
    pass


class _TokenScheme(OpenApiAuthenticationExtension):
    target_class = "cloudpacs.api._Token"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {"type": "apiKey", "in": "header", "name": "Authorization"}


class _BearerScheme(OpenApiAuthenticationExtension):
    target_class = "cloudpacs.api._Bearer"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {"type": "http", "scheme": "bearer"}


class IsTechnologist(BasePermission):
    message = "Only a township's technologist account may use the orders API."

    def has_permission(self, request: Request, view: Any) -> bool:
        return has_role(request.user, TECHNOLOGIST) and getattr(request.user, "facility_id", None) is not None


class BodyPartSerializer(serializers.ModelSerializer):
    dicom_values = serializers.ListField(child=serializers.CharField(), source="dicom_value_list", read_only=True)
    kinds = serializers.ListField(child=serializers.CharField(), source="kind_list", read_only=True)

    class Meta:
        model = BodyPart
        fields = ["code", "name_zh", "name_en", "dicom_values", "kinds"]


class OrderSerializer(serializers.ModelSerializer):
    modality = serializers.CharField(source="modality.ae_title", read_only=True)
    body_parts = serializers.SerializerMethodField()
    study_instance_uid_received = serializers.SerializerMethodField()
    needs_confirmation = serializers.BooleanField(read_only=True)

    class Meta:
        model = Order
        fields = [
            "uuid",
            "accession_number",
            "study_instance_uid",
            "status",
            "patient_id",
            "patient_name",
            "patient_name_pinyin",
            "patient_sex",
            "patient_birth_date",
            "kind",
            "modality",
            "body_parts",
            "priority",
            "clinical_history",
            "question",
            "scheduled_at",
            "created_at",
            "cancelled_at",
            "study_instance_uid_received",
            "matched_by",
            "needs_confirmation",
        ]
        read_only_fields = fields

    def get_body_parts(self, order: Order) -> list[str]:
        return [part.code for part in order.body_parts.all()]

    def get_study_instance_uid_received(self, order: Order) -> str | None:
        """The Study Instance UID of the images linked to the order, once they arrived."""
        return order.study.study_uid if order.study is not None else None


class _DateTimeField(serializers.DateTimeField):
    def to_internal_value(self, value: Any) -> Any:
        try:
            return super().to_internal_value(value)
        except OverflowError:
            # A time at the edge of the calendar that cannot be moved to the site's zone.
            raise ValidationError("date and time out of range") from None


class OrderCreateSerializer(serializers.Serializer):
    modality = serializers.CharField(max_length=16, help_text="The AE title of one of the township's consoles.")
    patient_id = serializers.CharField(max_length=64)
    patient_name = serializers.CharField(max_length=64, help_text="The name in Chinese, e.g. 张三.")
    patient_name_pinyin = serializers.CharField(max_length=64, required=False, allow_blank=True, default="")
    patient_sex = serializers.ChoiceField(choices=[value for value, _label in SEXES], required=False, default="")
    patient_birth_date = serializers.DateField(required=False, allow_null=True, default=None)
    body_parts = serializers.ListField(
        child=serializers.CharField(max_length=16),
        min_length=1,
        max_length=20,
        help_text="Codes of the body-part vocabulary (GET /api/body-parts/), e.g. CHEST.",
    )
    priority = serializers.ChoiceField(choices=OrderPriority.values, required=False, default=OrderPriority.ROUTINE)
    clinical_history = serializers.CharField(max_length=4000, required=False, allow_blank=True, default="")
    question = serializers.CharField(max_length=1000, required=False, allow_blank=True, default="")
    scheduled_at = _DateTimeField()

    def validate_body_parts(self, codes: list[str]) -> list[BodyPart]:
        found = {part.code: part for part in BodyPart.objects.filter(code__in=[code.upper() for code in codes])}
        unknown = [code for code in codes if code.upper() not in found]
        if unknown:
            raise ValidationError(f"unknown body part codes: {', '.join(unknown)}")
        return [found[code.upper()] for code in dict.fromkeys(codes)]

    def validate_modality(self, ae_title: str) -> Modality:
        user = self.context["request"].user
        modality = Modality.objects.filter(
            facility_id=user.facility_id, ae_title=ae_title.strip().upper(), is_active=True
        ).first()
        if modality is None:
            raise ValidationError("no active console of your township has this AE title")
        return modality


class OrderListView(APIView):
    authentication_classes = [_Token, _Bearer, SessionAuthentication]
    permission_classes = [IsAuthenticated, IsTechnologist, TokenScopePermission]

    def _orders(self, request: Request) -> QuerySet[Order]:
        return orders_for(request.user)

    @extend_schema(
        tags=["Orders"],
        summary="The township's orders, newest first (at most 500).",
        parameters=[
            OpenApiParameter("status", str, enum=Order.Status.values, description="Only orders in this state.")
        ],
        responses={200: OrderSerializer(many=True)},
    )
    def get(self, request: Request) -> Response:
        queryset = self._orders(request).order_by("-created_at", "-id")
        wanted = request.query_params.get("status", "")
        if wanted:
            if wanted not in Order.Status.values:
                raise ValidationError({"status": f"one of {', '.join(Order.Status.values)}"})
            queryset = queryset.filter(status=wanted)
        rows = list(queryset[:500])
        audit("cloudpacs.orders.viewed", request=request, object_type="cloudpacs.order", via="api", count=len(rows))  # type: ignore[arg-type]
        return Response(OrderSerializer(rows, many=True).data)

    @extend_schema(
        tags=["Orders"],
        summary="Register an exam: it gets an accession number and goes on the consoles' worklist.",
        request=OrderCreateSerializer,
        responses={201: OrderSerializer},
    )
    def post(self, request: Request) -> Response:
        serializer = OrderCreateSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            order = orders.register_order(request.user, request=request, **data)  # type: ignore[arg-type]
        except orders.OrderNotAllowed as refused:
            raise PermissionDenied(str(refused)) from refused
        except orders.OrderError as refused:
            raise ValidationError({"detail": str(refused)}) from refused
        order = orders_for(request.user).get(pk=order.pk)
        return Response(OrderSerializer(order).data, status=status.HTTP_201_CREATED)


class OrderDetailView(APIView):
    authentication_classes = [_Token, _Bearer, SessionAuthentication]
    permission_classes = [IsAuthenticated, IsTechnologist, TokenScopePermission]

    @extend_schema(tags=["Orders"], summary="One order of the township.", responses={200: OrderSerializer})
    def get(self, request: Request, order_uuid: Any) -> Response:
        order = orders_for(request.user).filter(uuid=order_uuid).first()
        if order is None:
            raise NotFound()
        audit("cloudpacs.order.viewed", request=request, obj=order, via="api")  # type: ignore[arg-type]
        return Response(OrderSerializer(order).data)


class OrderCancelView(APIView):
    authentication_classes = [_Token, _Bearer, SessionAuthentication]
    permission_classes = [IsAuthenticated, IsTechnologist, TokenScopePermission]

    @extend_schema(
        tags=["Orders"],
        summary="Cancel an order never performed (409 once a console started it or its images arrived).",
        request=None,
        responses={200: OrderSerializer},
    )
    def post(self, request: Request, order_uuid: Any) -> Response:
        order = orders_for(request.user).filter(uuid=order_uuid).first()
        if order is None:
            raise NotFound()
        try:
            order = orders.cancel_order(order, request.user, request=request)  # type: ignore[arg-type]
        except orders.OrderNotAllowed as refused:
            raise PermissionDenied(str(refused)) from refused
        except orders.OrderError as refused:
            return Response({"detail": str(refused)}, status=status.HTTP_409_CONFLICT)
        return Response(OrderSerializer(orders_for(request.user).get(pk=order.pk)).data)


class BodyPartListView(APIView):
    authentication_classes = [_Token, _Bearer, SessionAuthentication]
    permission_classes = [IsAuthenticated]

    @extend_schema(
        tags=["Orders"],
        summary="The body-part vocabulary, for one exam kind or all.",
        parameters=[OpenApiParameter("kind", str, enum=["CT", "DR"], description="Only parts for this kind.")],
        responses={200: BodyPartSerializer(many=True)},
    )
    def get(self, request: Request) -> Response:
        kind = request.query_params.get("kind") or None
        if kind is not None and kind not in ("CT", "DR"):
            raise ValidationError({"kind": "CT or DR"})
        return Response(BodyPartSerializer(orders.body_parts_for_kind(kind), many=True).data)
