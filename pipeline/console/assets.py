"""The console's static files (HTML shell, CSS, JS modules, icon), shipped inside the package.

Read once into memory when the console is mounted: a handful of small files, served with a strong ETag.
Only files under `static/` with a known suffix are served; anything else is a 404. No CDN, no fonts from
elsewhere: the browser needs nothing but this origin.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

__all__ = ["Asset", "load_assets"]

MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


def load_assets() -> dict[str, Asset]:
    """Every static file by its path under static/ (e.g. ``js/app.js``)."""
    root = resources.files("pipeline.console").joinpath("static")
    found: dict[str, Asset] = {}
    _walk(root, "", found)
    if "index.html" not in found:
        raise RuntimeError("the console's static files are missing from the package (static/index.html)")
    return found


def _walk(folder: Traversable, prefix: str, found: dict[str, Asset]) -> None:
    for entry in folder.iterdir():
        name = prefix + entry.name
        if entry.is_dir():
            _walk(entry, name + "/", found)
            continue
        suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
        media_type = MEDIA_TYPES.get(suffix)
        if media_type is None:
            continue
        body = entry.read_bytes()
        found[name] = Asset(body, media_type, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')
