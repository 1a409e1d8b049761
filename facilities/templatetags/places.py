"""Facilities named in the page's language: {{ facility|facility_name }} the full name
(汉阴县人民医院, Hanyin County People's Hospital), {{ facility|place }} the short one (漩涡,
Xuanwo). Both take None (no facility) as "—"."""

from __future__ import annotations

from django import template

from facilities.models import Facility

register = template.Library()


@register.filter
def facility_name(facility: Facility | None) -> str:
    return "—" if facility is None else facility.name_in()


@register.filter
def place(facility: Facility | None) -> str:
    return "—" if facility is None else facility.short_name_in()
