"""Form widgets that the pages of every app share."""

from __future__ import annotations

from django import forms


def date_input(*, calendar: bool = True) -> forms.DateInput:
    """A text field that static/js/dates.js turns into a calendar in the page's language
    (flatpickr), not the browser's own date input, which speaks the browser's language
    whatever the page's (mm/dd/yyyy on a Chinese page, 年/月/日 on an English one). Typed
    by hand it takes YYYY-MM-DD, the one format it shows. A birth date is typed, not
    picked from decades of months: `calendar=False` keeps the field without one."""
    attrs = {"placeholder": "YYYY-MM-DD", "autocomplete": "off", "inputmode": "numeric"}
    if calendar:
        attrs["data-datepicker"] = "date"
    return forms.DateInput(format="%Y-%m-%d", attrs=attrs)


def datetime_input() -> forms.DateTimeInput:
    """As date_input, with the time of day (24-hour): YYYY-MM-DD HH:MM."""
    attrs = {"data-datepicker": "datetime", "placeholder": "YYYY-MM-DD HH:MM", "autocomplete": "off"}
    return forms.DateTimeInput(format="%Y-%m-%d %H:%M", attrs=attrs)
