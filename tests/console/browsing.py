"""Helpers of the console's browser tests: waiting for a page, screenshots, accessibility checks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / ".roomlogs" / "artifacts" / "console"
AXE = Path(__file__).resolve().parent / "vendor" / "axe.min.js"
PHONE = {"width": 375, "height": 740}

#: `context = await new_context(**options)` (fixture `new_context`)
Contexts = Callable[..., Awaitable[Any]]
#: `page = await sign_in(sub, staff=False, next_page=None, **context_options)` (fixture `sign_in`)
SignIn = Callable[..., Awaitable[Any]]


async def ready(page: Any) -> None:
    """Wait until the page's script has rendered what the API answered."""
    await page.wait_for_selector("body[data-ready='true']")


async def open_page(page: Any, url: str) -> None:
    await page.goto(url)
    await ready(page)


async def shot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


async def axe_violations(page: Any) -> list[dict[str, Any]]:
    """Serious and critical violations axe-core finds on the page (the context must bypass CSP)."""
    if not await page.evaluate("typeof window.axe !== 'undefined'"):
        await page.add_script_tag(path=str(AXE))
    result = await page.evaluate(
        """async () => {
            const r = await window.axe.run(document, {resultTypes: ["violations"]});
            return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.slice(0, 3).map(n => n.target.join(" "))}));
        }"""
    )
    return [v for v in result if v["impact"] in ("serious", "critical")]
