"""The words static/js/validity.js tells a refused field with, in the page's language:
the browser's own messages (a required field left empty, a number under a field's min)
are in the browser's language, whatever the page's. Django's own messages, so that the
browser says what the form would say after posting."""

from __future__ import annotations

from django import template
from django.utils.html import json_script
from django.utils.safestring import SafeString
from django.utils.translation import gettext

register = template.Library()


@register.simple_tag
def validity_messages() -> SafeString:
    words = {
        "required": gettext("This field is required."),
        "whole": gettext("Enter a whole number."),
        "number": gettext("Enter a number."),
        "min": gettext("Ensure this value is greater than or equal to %(limit_value)s."),
        "max": gettext("Ensure this value is less than or equal to %(limit_value)s."),
        "email": gettext("Enter a valid email address."),
        "date": gettext("Enter a valid date."),
        "invalid": gettext("Enter a valid value."),
    }
    return json_script(words, "validity-messages")
