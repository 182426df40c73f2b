"""Room console benchmark: server time of the console's pages at 10M events, and the weight of each page.

    python bench/console.py [--events 10000000] [--rooms 10000] [--days 30] [--dsn postgresql://...]
                            [--schema NAME] [--samples 300] [--work-dir DIR]

1. Loads the same skewed world as bench/api.py (binary COPY with every index in place), then VACUUMs it as
   autovacuum would (`--schema NAME` reuses a loaded schema, e.g. one bench/api.py loaded). Installs the
   benchmark's token key as the key the database verifies sign-ins with (`roomlogs api trust-key`).
2. Signs in as each sampled room's owner (POST /v1/session, as the sign-in page does) and measures, through
   the whole app in process (gate, session cookie lookup, access check, query, audit insert, JSON), the
   API calls each console page makes on load:
   - day view: GET /v1/session + GET /v1/rooms/{room}/events for one UTC day, 100 events, oldest first
     (busy rooms and days with at least 100 events, and random rooms);
   - calendar: GET /v1/session + GET /v1/rooms/{room}/days for 31 days (the 20 busiest rooms, the first
     view of each and again; random rooms);
   - insights (4 weeks; the 20 busiest rooms, first view and again; random rooms) and an event with its
     context.
   Prints p50 / p99 / max server time per page.
3. Page weight: every file the browser fetches for each page (HTML shell, CSS, icon, the JS modules it
   imports), bytes as served and gzipped, plus the JSON of a typical room.
Without --dsn it starts an embedded PostgreSQL in the run's work directory (bench/workdir.py) and stops it
at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import random
import re
import secrets
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import jwt
from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).resolve().parent))
from api import load, percentile
from workdir import add_work_dir_argument, run_dir

from pipeline.api import ApiSettings, create_app
from pipeline.api.trust import install, token_trust
from pipeline.console import mount
from pipeline.console.assets import load_assets
from pipeline.settings import Secret
from pipeline.stack import EmbeddedPostgres
from pipeline.storage import db
from pipeline.storage.migrate import migrate

JWT_KEY = secrets.token_urlsafe(48)
PAGES = ("rooms", "signin", "calendar", "day", "event", "live", "insights", "transparency")
_IMPORT = re.compile(r"""(?:import|from)\s*(?:[^"']*?\bfrom\s*)?["'](\.{1,2}/[^"']+)["']""")


def report(name: str, seconds: list[float]) -> None:
    ms = [s * 1000 for s in seconds]
    print(f"{name:<48} n={len(ms):<4} p50 {percentile(ms, 50):7.1f} ms   p99 {percentile(ms, 99):7.1f} ms   "
          f"max {max(ms):7.1f} ms", flush=True)  # fmt: skip


def bearer(sub: str) -> str:
    return "Bearer " + jwt.encode({"sub": sub, "exp": int(time.time()) + 7200}, JWT_KEY, algorithm="HS256")


class Console:
    """One owner's signed-in browser, as far as the server can tell: a session cookie on every call."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.cookies: dict[str, httpx.Cookies] = {}

    async def sign_in(self, owner: str) -> httpx.Cookies:
        if owner not in self.cookies:
            answer = await self.client.post("/v1/session", headers={"Authorization": bearer(owner)})
            answer.raise_for_status()
            self.cookies[owner] = answer.cookies
        return self.cookies[owner]

    async def page(self, owner: str, *calls: tuple[str, dict[str, Any]]) -> tuple[float, int]:
        """Server time of a page's API calls (made one after another, as the page does) and JSON bytes."""
        cookies = await self.sign_in(owner)
        started = time.perf_counter()
        size = 0
        for url, params in (("/v1/session", {}), *calls):
            self.client.cookies = cookies
            answer = await self.client.get(url, params=params)
            if answer.status_code != 200:
                raise RuntimeError(f"{url} {params}: {answer.status_code} {answer.text[:300]}")
            size += len(answer.content)
        return time.perf_counter() - started, size


def api_settings(api_dsn: str = "") -> ApiSettings:
    """The API as measured: the benchmark's HS256 key, no rate limit."""
    return ApiSettings(
        postgres_dsn=Secret(api_dsn), jwt_key=Secret(JWT_KEY), jwt_algorithm="HS256",
        cursor_key=Secret(secrets.token_urlsafe(48)), rate_limit_per_second=1e6, rate_limit_burst=1_000_000,
        statement_timeout_seconds=30,
    )  # fmt: skip


async def measure(dsn: str, api_dsn: str, schema: str, samples: int) -> None:
    settings = api_settings(api_dsn)
    admin = await db.connect(dsn, schema)
    busy = await admin.fetch(
        """SELECT room_id, (occurred_at AT TIME ZONE 'UTC')::date AS day, count(*) AS n
             FROM events WHERE room_id = ANY($1::text[]) GROUP BY 1, 2 HAVING count(*) >= 100""",
        [f"room-{r}" for r in range(300)],
    )
    rooms_total = await admin.fetchval("SELECT count(*) FROM rooms")
    last = await admin.fetchval("SELECT max(occurred_at) FROM events")
    one = await admin.fetchrow("SELECT room_id, event_id FROM events WHERE room_id = 'room-50' LIMIT 1")
    await admin.close()
    if not busy or one is None:
        raise SystemExit("no room-day with 100 events: load more events (--events)")
    app = mount(create_app(settings, schema, registry=CollectorRegistry()))
    rng = random.Random(11)
    today = datetime.now(UTC).date()
    # a month of days, as the calendar asks for in the middle of a month
    month = {"from": (today - timedelta(days=30)).isoformat(), "to": today.isoformat()}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://console.bench",
                          timeout=600) as client,
    ):  # fmt: skip
        console = Console(client)

        def owner(room: str) -> str:
            return room.replace("room", "owner")

        def day_view(room: str, day: Any) -> tuple[str, dict[str, Any]]:
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return f"/v1/rooms/{room}/events", {
                "since": start.isoformat(), "until": (start + timedelta(days=1)).isoformat(),
                "order": "asc", "limit": 100,
            }  # fmt: skip

        for r in rng.sample(busy, min(20, len(busy))):  # warm-up: plans cached, index pages in memory
            await console.page(owner(r["room_id"]), day_view(r["room_id"], r["day"]))
        print(f"\nserver time of each page's API calls ({samples} samples; whole app in process)", flush=True)
        days_busy = [(await console.page(owner(r["room_id"]), day_view(r["room_id"], r["day"])))[0]
                     for r in (rng.choice(busy) for _ in range(samples))]  # fmt: skip
        report("day view, busy room-day (>=100 events)", days_busy)
        random_days = []
        for _ in range(samples):
            room = f"room-{rng.randrange(rooms_total)}"
            day = last.date() - timedelta(days=rng.randrange(7))
            random_days.append((await console.page(owner(room), day_view(room, day)))[0])
        report("day view, random room and day", random_days)

        def calendar(room: str) -> tuple[str, dict[str, Any]]:
            return f"/v1/rooms/{room}/days", month

        # first view of a room's month in this process (per-type counts read from the rows), then again
        # (past days' per-type counts reused while their index-only totals are unchanged)
        cal_cold = [(await console.page(owner(f"room-{i}"), calendar(f"room-{i}")))[0] for i in range(20)]
        report("calendar (31 days), 20 busiest rooms, first view", cal_cold)
        cal_warm = [(await console.page(owner(f"room-{i % 20}"), calendar(f"room-{i % 20}")))[0]
                    for i in range(max(40, samples // 5))]  # fmt: skip
        report("calendar (31 days), 20 busiest rooms, again", cal_warm)
        picks = [f"room-{rng.randrange(20, rooms_total)}" for _ in range(samples)]
        cal_random = [(await console.page(owner(room), calendar(room)))[0] for room in picks]
        report("calendar (31 days), random room, first view", cal_random)

        def insights(room: str) -> tuple[str, dict[str, Any]]:
            return f"/v1/rooms/{room}/insights", {"weeks": 4, "tz": "Europe/Berlin"}

        ins_cold = [(await console.page(owner(f"room-{i}"), insights(f"room-{i}")))[0] for i in range(20)]
        report("insights (4 weeks), 20 busiest rooms, first view", ins_cold)
        ins_warm = [(await console.page(owner(f"room-{i % 20}"), insights(f"room-{i % 20}")))[0]
                    for i in range(40)]  # fmt: skip
        report("insights (4 weeks), 20 busiest rooms, again", ins_warm)
        ins_random = [(await console.page(owner(room), insights(room)))[0] for room in picks[:50]]
        report("insights (4 weeks), random room, first view", ins_random)
        around = f"/v1/rooms/{one['room_id']}/events/{one['event_id']}/context"
        context = [(await console.page(owner(one["room_id"]), (around, {})))[0]
                   for _ in range(max(20, samples // 10))]  # fmt: skip
        report("event with context (10 before, 10 after)", context)
        # JSON of a typical room's pages, for the page weight
        room = f"room-{rooms_total // 2}"
        typical_day = last.date()
        json_bytes = {
            "rooms": (await console.page(owner(room), ("/v1/me/rooms", {})))[1],
            "calendar": (await console.page(owner(room), (f"/v1/rooms/{room}/days", month)))[1],
            "day": (await console.page(owner(room), day_view(room, typical_day)))[1],
            "insights": (await console.page(owner(room), (f"/v1/rooms/{room}/insights", {"weeks": 4})))[1],
            "transparency": (await console.page(owner(room), (f"/v1/rooms/{room}/retention", {}),
                                                (f"/v1/rooms/{room}/access-log", {"limit": 50})))[1],
        }  # fmt: skip
    page_weights(json_bytes)


def _module_graph(assets: dict[str, Any], entry: str) -> list[str]:
    seen: list[str] = []
    stack = [entry]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.append(name)
        text = assets[name].body.decode()
        folder = name.rsplit("/", 1)[0]
        for ref in _IMPORT.findall(text):
            parts = folder.split("/")
            for piece in ref.split("/"):
                if piece == "..":
                    parts.pop()
                elif piece != ".":
                    parts.append(piece)
            stack.append("/".join(parts))
    return seen


def page_weights(json_bytes: dict[str, int]) -> None:
    assets = load_assets()
    common = ["index.html", "console.css", "icon.svg", *_module_graph(assets, "js/app.js")]
    print("\npage weight: every file a first visit fetches (no compression is served; gzip for reference)")
    print(f"{'page':<14}{'files':>6}{'bytes':>10}{'gzip':>9}{'+ JSON (typical room)':>24}")
    for page in PAGES:
        files = list(dict.fromkeys(common + _module_graph(assets, f"js/pages/{page}.js")))
        raw = sum(len(assets[f].body) for f in files)
        packed = sum(len(gzip.compress(assets[f].body)) for f in files)
        extra = json_bytes.get(page)
        print(f"{page:<14}{len(files):>6}{raw:>10,}{packed:>9,}{'' if extra is None else f'{extra:,}':>24}")


async def main_async(args: argparse.Namespace, dsn: str) -> None:
    schema = args.schema or f"bench_console_{uuid.uuid4().hex[:8]}"
    conn = await db.connect(dsn, schema)
    try:
        await migrate(conn, schema)
        if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM events LIMIT 1)"):
            print(f"schema {schema} already loaded: measuring only", flush=True)
        else:
            rate = await load(conn, args.events, args.rooms, args.days)
            print(f"loaded {args.events:,} events over {args.rooms:,} rooms and {args.days} days "
                  f"by binary COPY: {rate:,.0f} events/s", flush=True)  # fmt: skip
            # what autovacuum does to day partitions once they stop being written (insert threshold): their
            # pages become all-visible, so per-day totals are index-only scans
            started = time.perf_counter()
            await conn.execute("VACUUM (ANALYZE) events")
            print(f"VACUUM (ANALYZE) events: {time.perf_counter() - started:.0f} s", flush=True)
        password = secrets.token_hex(16)
        await conn.execute(f"ALTER ROLE {schema}_api PASSWORD '{password}'")
        # sign-ins are verified by the database with the key `roomlogs api trust-key` installs: this run's
        await install(conn, token_trust(api_settings()))
    finally:
        await conn.close()
    parts = urlsplit(dsn)
    netloc = f"{schema}_api:{password}@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    api_dsn = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    await measure(dsn, api_dsn, schema, args.samples)
    if not args.schema:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
            await conn.execute(f'DROP OWNED BY "{schema}_api"')
            await conn.execute(f'DROP ROLE "{schema}_api"')
        finally:
            await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--rooms", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--samples", type=int, default=300, help="page loads per measured page (default 300)")
    parser.add_argument("--dsn", default="", help="PostgreSQL to use (default: start an embedded one)")
    parser.add_argument("--schema", default="", help="reuse (or create and keep) this schema")
    add_work_dir_argument(parser)
    args = parser.parse_args()
    with run_dir(args.work_dir, "roomlogs-bench-console-") as work_dir:
        if args.dsn:
            asyncio.run(main_async(args, args.dsn))
            return
        with EmbeddedPostgres(work_dir / "postgres", fast=True) as postgres:
            asyncio.run(main_async(args, postgres.dsn))


if __name__ == "__main__":
    main()
