"""Fixtures of the room console's tests: the world, a live server, and a real browser (Debian's Chromium).

The browser is Debian's `chromium`, driven by Playwright with `executable_path` (no browser download):
installed by `make test` (`make browser-tools`). Where it is missing the browser tests are skipped, except
under CI=true, where they fail: CI must run them.

Screenshots of every page the tests visit are saved under `.roomlogs/artifacts/console/` (gitignored);
helpers for pages are in browsing.py.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import AsyncIterator
from typing import Any

import pytest
from browsing import Contexts, SignIn, ready
from console_world import ConsoleWorld, console_server, console_world

CHROMIUM = os.environ.get("ROOMLOGS_TEST_CHROMIUM", "/usr/bin/chromium")
#: As root, in a closed network: no sandbox, and nothing that phones home and stalls the start.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
    "--disable-dev-shm-usage",
]


@pytest.fixture(scope="session")
async def world(kafka_bootstrap: str, postgres_dsn: str) -> AsyncIterator[ConsoleWorld]:
    async with console_world(kafka_bootstrap, postgres_dsn) as w, console_server(w) as base_url:
        w.base_url = base_url
        yield w


def _unavailable(why: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"the console's browser tests must run in CI: {why} (run `make browser-tools`)")
    pytest.skip(f"{why}: run `make browser-tools` (apt-get install chromium)")


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Any]:
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        _unavailable("playwright is not installed")
    if not shutil.which(CHROMIUM):
        _unavailable(f"no Chromium at {CHROMIUM}")
    playwright = await async_playwright().start()
    try:
        # Playwright gives each launch a fresh temporary profile (its own --user-data-dir)
        chromium = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=60_000
        )
    except Exception as e:
        await playwright.stop()
        _unavailable(f"Chromium did not start: {e}")
    try:
        yield chromium
    finally:
        await chromium.close()
        await playwright.stop()


@pytest.fixture
async def new_context(browser: Any) -> AsyncIterator[Contexts]:
    """`context = await new_context(**options)`: a fresh browser profile state (cookies) per call."""
    made: list[Any] = []

    async def make(**options: Any) -> Any:
        options.setdefault("accept_downloads", True)
        context = await browser.new_context(**options)
        context.set_default_timeout(20_000)
        made.append(context)
        return context

    yield make
    for context in made:
        await context.close()


@pytest.fixture
def sign_in(world: ConsoleWorld, new_context: Contexts) -> SignIn:
    """`page = await sign_in("u-owner", staff=False, next_page=None, **context_options)`."""

    async def go(sub: str, *, staff: bool = False, next_page: str | None = None, **options: Any) -> Any:
        context = await new_context(**options)
        page = await context.new_page()
        page.errors = []  # type: ignore[attr-defined]
        page.on("pageerror", lambda e: page.errors.append(str(e)))  # type: ignore[attr-defined]
        await page.goto(world.link(sub, staff=staff, next_page=next_page))
        await page.wait_for_url(re.compile(r".*/console/(?!sign-in).*"))
        await ready(page)
        return page

    return go
