"""A static style sheet written into the page: `{% inline_style "css/app.css" %}` gives
`<style>` with the file's text, and the page's Content-Security-Policy allows exactly that
text by its SHA-256 (cloudpacs.middleware.ContentSecurityPolicyMiddleware), never
'unsafe-inline'.

A `<link rel="stylesheet">` in the head holds the page's first paint until the file is in:
the viewer's page, whose first paint is its server-rendered first image, carries its style
sheets in the page instead (docs/viewer.md). A file that cannot be found gives the usual
`<link>`. Each file is read again only when it changes."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path
from typing import Any

from django import template
from django.templatetags.static import static
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

from cloudpacs.templatetags.viewer_build import static_file_path

register = template.Library()

# The request attribute that collects the hashes of the <style> elements a page carries.
REQUEST_HASHES = "csp_style_hashes"

_read: dict[str, tuple[float, str, str]] = {}


def style_text(name: str) -> tuple[str, str] | None:
    """(the text of the static file `name`, its CSP source 'sha256-...'), or None when it
    is not there."""
    path = static_file_path(name)
    if path is None:
        return None
    changed = os.stat(path).st_mtime
    known = _read.get(path)
    if known and known[0] == changed:
        return known[1], known[2]
    text = Path(path).read_text(encoding="utf-8")
    digest = base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")
    source = f"'sha256-{digest}'"
    _read[path] = (changed, text, source)
    return text, source


@register.simple_tag(takes_context=True)
def inline_style(context: dict[str, Any], name: str) -> SafeString:
    request = context.get("request")
    found = style_text(name)
    if found is None or request is None or "</" in found[0]:
        return format_html('<link rel="stylesheet" href="{}">', static(name))
    text, source = found
    hashes: list[str] = getattr(request, REQUEST_HASHES, [])
    if source not in hashes:
        hashes.append(source)
    setattr(request, REQUEST_HASHES, hashes)
    # The site's own file, as it is: escaping would change its text and so its hash.
    return mark_safe(f"<style>{text}</style>")  # noqa: S308
