"""What the browser tests (and bench/viewer) share: how Chromium is started and a page
that records the script errors it meets. The `chromium` fixture (conftest.py) uses them;
a test that must write its data after the fixtures calls `launch` itself."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from django.conf import settings

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    # Cornerstone3D draws with WebGL; without a GPU, SwiftShader provides it.
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    # Date fields in the order a Chinese browser shows them (年/月/日).
    "--lang=zh-CN",
]
# Not through Django's settings, so that a benchmark can import this before it sets them up.
# The build's manifest (frontend/vite.config.js): it names the entry, viewer-<hash>.js.
BUILT_VIEWER = Path(__file__).resolve().parent.parent / "static" / "viewer" / "manifest.json"
# The entry script's URL, whatever its hash, for page.route.
VIEWER_ENTRY = "**/viewer/viewer-*.js"


def launch(playwright: Any) -> Any:
    """A headless Chromium started by `playwright` (its sync API), in Chinese."""
    return playwright.chromium.launch(
        executable_path=CHROMIUM,
        args=CHROMIUM_ARGS,
        env={**os.environ, "LANGUAGE": "zh_CN", "LANG": "zh_CN.UTF-8"},
    )


def watched_page(context: Any) -> Any:
    """A new page of `context` whose uncaught script errors collect in `page.errors`."""
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.errors = errors
    return page


def session_context(browser: Any, base_url: str, session: str, **options: Any) -> Any:
    """A browser context at 1200x800 in Chinese, signed in with the session cookie given."""
    options = {"viewport": {"width": 1200, "height": 800}, "locale": "zh-CN", **options}
    context = browser.new_context(**options)
    context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": session, "url": base_url}])
    return context


def press(page: Any, selector: str) -> None:
    """Click a viewer tool, opening the toolbar's 更多 menu first when the tool is under it
    (the row too narrow for every group)."""
    button = page.locator(selector).first
    if not button.is_visible() and page.locator("[data-more]").first.is_visible():
        page.locator("[data-more]").first.click()
    button.click()


def choose(page: Any, selector: str, value: str) -> None:
    """Select an option of a viewer toolbar list, through the 更多 menu when it is there."""
    field = page.locator(selector).first
    if not field.is_visible() and page.locator("[data-more]").first.is_visible():
        page.locator("[data-more]").first.click()
    field.select_option(value)
