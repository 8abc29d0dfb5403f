"""Fixtures of the web tests: one headless Chromium (Debian's, through Playwright), users, screenshots."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright

from tests.helpers import REPO

CHROMIUM = "/usr/bin/chromium"  # Debian's package (scripts/setup.sh); never `playwright install`
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOTS = REPO / "docs" / "screenshots"
PASSWORDS = {"alice": "alice-admin-pw-1", "victor": "victor-viewer-pw-1"}  # test users only
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    """Per module: Playwright's sync API keeps an event loop running in this thread while it is started,
    which the async tests of other modules must not find."""
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/setup.sh (apt-get install -y chromium)")
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport=DESKTOP, accept_downloads=True)
    ctx.set_default_timeout(15_000)
    yield ctx
    ctx.close()


@pytest.fixture
def page(context: BrowserContext) -> Iterator[Page]:
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    assert not errors, f"JavaScript errors on the page: {errors}"


def add_users(flag: str, target: Path, workdir: Path) -> None:
    """Create the test users with the real command (``edugate web-user add ... --password-file``)."""
    for name, role in (("alice", "admin"), ("victor", "viewer")):
        secret = workdir / f"{name}.pw"
        secret.write_text(PASSWORDS[name] + "\n")
        result = subprocess.run([sys.executable, "-m", "edugate.cli.main", "web-user", "add", name, "--role", role,
                                 "--password-file", str(secret), flag, str(target)],
                                capture_output=True, text=True, cwd=REPO)
        assert result.returncode == 0, result.stdout + result.stderr
        secret.unlink()


def login(page: Page, base: str, user: str, target: str = "/") -> None:
    page.goto(f"{base}/login?next={target}")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", PASSWORDS[user])
    page.click("form.stack button[type=submit]")
    page.wait_for_load_state()
    assert "/login" not in page.url, f"login as {user} failed: {page.url}"


def screenshot(page: Page, name: str, tmp_dir: Path, *, full_page: bool = True) -> Path:
    """Save a screenshot in the test's folder; with EDUGATE_SCREENSHOTS=1 also into docs/screenshots/."""
    path = tmp_dir / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    if os.environ.get("EDUGATE_SCREENSHOTS"):
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, SCREENSHOTS / f"{name}.png")
    return path
