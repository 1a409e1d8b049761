"""Consults and reports are deliberately not in the Django admin: every change to them is a
clinical state change that must go through consults.services and leave an audit entry, and
administrators are not shown patients' reports. Radiologists work on them in the worklist."""
