"""The built viewer's files by their hashed names: `{% viewer_build as viewer %}` then
`{% static viewer.script %}`, each of `viewer.styles` and each of `viewer.later`.

vite (frontend/vite.config.js) names every file it writes by its content's hash, the entry
too (`viewer/viewer-<hash>.js`), so that WhiteNoise can let browsers keep them for a year
without asking again (settings.WHITENOISE_IMMUTABLE_FILE_TEST); its manifest
(`static/viewer/manifest.json`) says which name the entry has now. The manifest is read
again only when its file changes (a rebuild while the server runs)."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from django import template
from django.contrib.staticfiles import finders
from django.contrib.staticfiles.storage import staticfiles_storage

register = template.Library()
logger = logging.getLogger(__name__)

MANIFEST = "viewer/manifest.json"
# The entry's key in the manifest: its source, relative to frontend/.
ENTRY = "src/main.js"
# The chunks the viewer imports right after its first image (Cornerstone's tools: until
# they run, the mouse does nothing), which the page has the browser fetch and compile
# meanwhile (<link rel="modulepreload">): importing them is then only running them.
LATER = ("src/tools.js",)


@dataclass(frozen=True)
class ViewerBuild:
    """The entry script, its style sheets and the modules it imports after the first image
    (with the modules those import but the entry does not), as paths under STATIC_URL
    ("" and [] when unbuilt)."""

    script: str = ""
    styles: list[str] = field(default_factory=list)
    later: list[str] = field(default_factory=list)


def _imported(manifest: dict[str, dict], keys: list[str]) -> list[str]:
    """The manifest keys `keys` and every chunk they import, statically, in order."""
    found: list[str] = []
    pending = list(keys)
    while pending:
        key = pending.pop(0)
        if key in found or key not in manifest:
            continue
        found.append(key)
        pending.extend(manifest[key].get("imports", []))
    return found


_read: dict[str, tuple[float, ViewerBuild]] = {}


def static_file_path(name: str) -> str | None:
    """The file of the static asset `name` on this machine: found by the static files
    finders (development), else in the collected static root; None when neither has it or
    the storage keeps no local files (its path() is not implemented)."""
    found = finders.find(name)
    if isinstance(found, list):
        found = found[0] if found else None
    if found:
        return str(found)
    try:
        return staticfiles_storage.path(name) if staticfiles_storage.exists(name) else None
    except NotImplementedError:
        return None


def viewer_build() -> ViewerBuild:
    """The current build's entry, or an empty ViewerBuild (and a warning) when the viewer
    was never built: the page then shows its server-rendered first image only."""
    path = static_file_path(MANIFEST)
    if path is None:
        logger.warning("the viewer is not built (no %s): bash scripts/build-viewer.sh", MANIFEST)
        return ViewerBuild()
    changed = os.stat(path).st_mtime
    known = _read.get(path)
    if known and known[0] == changed:
        return known[1]
    manifest = json.loads(Path(path).read_text())
    entry = manifest[ENTRY]
    loaded = set(_imported(manifest, [ENTRY]))
    build = ViewerBuild(
        script=f"viewer/{entry['file']}",
        styles=[f"viewer/{css}" for css in entry.get("css", [])],
        later=[f"viewer/{manifest[key]['file']}" for key in _imported(manifest, list(LATER)) if key not in loaded],
    )
    _read[path] = (changed, build)
    return build


register.simple_tag(viewer_build, name="viewer_build")
