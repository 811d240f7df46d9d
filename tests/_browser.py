"""
The browser of the e2e checks (``tests/e2e``) and the Kling view's tests (``tests/ui``): Debian's Chromium
driven by Playwright, its flags, its screenshots, and the fixtures that open it.

Each conftest imports :func:`browser`, :func:`page` and :func:`pytest_runtest_makereport` (pytest registers
what a conftest's namespace holds) and defines ``browser_artifacts``, the package's screenshot directory
(cleared of an earlier session's ``*.png`` when the browser starts). Where no Chromium is installed, the
``browser`` fixture skips the tests that use it.
"""

from __future__ import annotations

import os
import shutil
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from playwright.sync_api import BrowserContext, Page

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
#: Chromium's flags (``--headless`` comes from ``headless=True``, the fresh ``--user-data-dir`` from
#: ``launch_persistent_context``, which refuses it among the arguments).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: How long the UI may take to show what a check waits for (pages load their data after ``networkidle``).
UI_TIMEOUT_MS = 45_000


def chromium_executable() -> str | None:
    """Return Debian's Chromium (or ``KLING_E2E_CHROMIUM``), or ``None`` when none is installed."""
    override = os.environ.get("KLING_E2E_CHROMIUM")
    if override:
        return override if os.access(override, os.X_OK) else None
    for candidate in CHROMIUM_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("chromium")


def save_screenshot(page: Page, artifacts: Path, name: str) -> Path:
    """Save a full-page screenshot as ``<artifacts>/<name>.png`` and return its path."""
    artifacts.mkdir(parents=True, exist_ok=True)
    path = artifacts / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


@pytest.fixture(scope="package")
def browser(browser_artifacts: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    """Headless Debian Chromium under Playwright with a fresh profile; skips where none is installed."""
    executable = chromium_executable()
    if executable is None:
        pytest.skip(
            "No Chromium to drive: install Debian's package (`apt-get install -y chromium`) or set "
            "KLING_E2E_CHROMIUM to a Chromium binary"
        )
    from playwright.sync_api import sync_playwright

    for stale in browser_artifacts.glob("*.png"):  # screenshots of an earlier session
        stale.unlink()
    profile = tmp_path_factory.mktemp("chromium-profile")  # Playwright takes the profile dir this way
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=executable,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1440, "height": 1000},
            timeout=120_000,
        )
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser: BrowserContext, browser_artifacts: Path, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh page; on a failure its screenshot is saved as ``<browser_artifacts>/FAILED-<test>.png``."""
    page = browser.new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    try:
        yield page
    finally:
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            save_screenshot(page, browser_artifacts, f"FAILED-{request.node.name}")
        page.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the test item, so that fixtures can tell whether the test failed."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
