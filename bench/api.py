"""Query API benchmark: latency of the three reads that matter, on a realistically skewed world.

    python bench/api.py [--events 10000000] [--rooms 10000] [--days 30] [--dsn postgresql://...]
                        [--schema NAME] [--samples 300] [--seal] [--work-dir DIR]

1. Loads N events over `--rooms` rooms and the last `--days` days into a fresh schema by binary COPY (with
   every index of migrations 0001-0003 in place, as the ingest worker would write them). Room activity
   is Zipf-like (a few busy rooms, a long tail); 75% of events are chat.
   With --schema NAME and a schema of that name already loaded, the load is skipped (repeat runs).
   With --seal, every closed day (all but today, once the late window has passed) is then sealed by the
   sealing run itself (`seal_closed_days`, with a new key in the work dir) and the chat search indexes of
   the sealed days are built as maintenance builds them (`pipeline.storage.search_index.build_sealed`):
   prints how long each took and the indexes' sizes. On a schema already sealed it seals and builds what
   is missing (nothing, usually).
2. Measures, through the API app in process (httpx ASGI transport: token check, access check against
   rooms/room_moderators, query, audit insert, JSON), as the room's owner connected as the API's role:
   - a room-day page of 100 events (busy rooms and days with at least 100 events),
   - a chat text search in a room over 7 days (a typical room, and the busiest rooms), and in the busiest
     rooms for a word that never occurs, over 7 days and over the live day alone (never indexed),
   - a user's record in a room (user card) and their latest 20 messages, for chatters of the busiest
     rooms, and the same messages through the room's events filtered by actor (for comparison),
   - an NDJSON export of 100,000 events (the busiest room).
Prints p50 / p99 (and max) for each, the load rate and the table and index sizes.
Without --dsn it starts an embedded PostgreSQL in the run's work directory (bench/workdir.py) and stops it
at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import random
import secrets
import statistics
import sys
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import jwt
import orjson
from prometheus_client import CollectorRegistry
from tqdm import tqdm
from workdir import add_work_dir_argument, run_dir

from pipeline.api import ApiSettings, create_app
from pipeline.evidence.keys import SealKey
from pipeline.sealing.run import seal_closed_days
from pipeline.settings import Secret, Settings
from pipeline.stack import EmbeddedPostgres
from pipeline.storage import db
from pipeline.storage.batch import EVENT_COLUMNS
from pipeline.storage.migrate import migrate
from pipeline.storage.partitions import PartitionManager
from pipeline.storage.search_index import build_sealed, search_indexes

JWT_KEY = secrets.token_urlsafe(48)
CHUNK = 50_000
_SYLLABLES = ("ka", "lo", "mi", "ne", "po", "ru", "sa", "te", "vu", "zo")
_ENDINGS = ("ba", "de", "fi", "go", "hu", "jo", "ki", "la", "mo", "ny", "pe", "qu", "ri", "so", "tu")
WORDS = [a + b for a in _SYLLABLES for b in _ENDINGS]
WORDS += ["hello", "thanks", "party", "music", "dance", "avatar", "world", "friend", "gift", "room"]
SEARCH_TERM = "party"  # about 1 chat line in 15 contains it


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def room_weights(rooms: int) -> list[float]:
    cumulative, total = [], 0.0
    for rank in range(1, rooms + 1):
        total += rank**-0.8
        cumulative.append(total)
    return [c / total for c in cumulative]


def make_rows(n: int, day: date, cumulative: list[float], rng: random.Random) -> list[tuple[Any, ...]]:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    seconds = sorted(rng.random() * 86_400 for _ in range(n))
    rows = []
    for i, sec in enumerate(seconds):
        room = bisect.bisect_left(cumulative, rng.random())
        actor = f"u-{rng.randrange(200_000)}"
        kind = rng.random()
        target = body = None
        if kind < 0.75:
            etype = "chat.message"
            body = " ".join(rng.choices(WORDS, k=rng.randint(3, 12)))
        elif kind < 0.85:
            etype = "user.entered"
        elif kind < 0.95:
            etype = "user.left"
        elif kind < 0.98:
            etype = "moderation.warn"
            target, body = f"u-{rng.randrange(200_000)}", "please keep it friendly"
        else:
            etype = "gift.sent"
            target = f"u-{rng.randrange(200_000)}"
        payload = orjson.dumps({"actor": {"user_id": actor, "display_name": f"Player {actor[2:]}"}})
        rows.append((uuid.uuid4(), start + timedelta(seconds=sec), "private", f"room-{room}", etype, 1, actor,
                     target, body, payload, 0, i))  # fmt: skip
    return rows


async def load(conn: asyncpg.Connection, events: int, rooms: int, days: int) -> float:
    today = datetime.now(UTC).date()
    first = today - timedelta(days=days - 1)
    await conn.executemany(
        "INSERT INTO rooms (room_id, privacy, retention_class, owner_id) "
        "VALUES ($1, 'private', 'private', $2)",
        [(f"room-{r}", f"owner-{r}") for r in range(rooms)],
    )
    await conn.executemany(
        "INSERT INTO room_moderators (room_id, user_id, since) VALUES ($1, $2, now())",
        [(f"room-{r}", f"mod-{r}") for r in range(rooms)],
    )
    partitions = PartitionManager()
    await partitions.load(conn)
    await partitions.ensure(conn, {("private", first + timedelta(days=d)) for d in range(days)})
    cumulative = room_weights(rooms)
    rng = random.Random(42)
    per_day = [events // days + (1 if d < events % days else 0) for d in range(days)]
    copying: asyncio.Task[Any] | None = None
    started = time.perf_counter()
    with tqdm(total=events, unit="ev", desc="COPY", file=sys.stderr, mininterval=2) as bar:
        for d, n in enumerate(per_day):
            for offset in range(0, n, CHUNK):
                rows = make_rows(min(CHUNK, n - offset), first + timedelta(days=d), cumulative, rng)
                if copying is not None:
                    bar.update(await copying)
                copying = asyncio.create_task(_copy(conn, rows))
        if copying is not None:
            bar.update(await copying)
    elapsed = time.perf_counter() - started
    await conn.execute("ANALYZE events")
    return events / elapsed


async def _copy(conn: asyncpg.Connection, rows: list[tuple[Any, ...]]) -> int:
    await conn.copy_records_to_table("events", records=rows, columns=EVENT_COLUMNS)
    return len(rows)


async def seal(conn: asyncpg.Connection, dsn: str, schema: str, work_dir: Path) -> None:
    """--seal: the closed days sealed by the sealing run, then their search indexes built (maintenance's
    two steps, without the witness topic)."""
    settings = Settings(postgres_dsn=Secret(dsn), postgres_schema=schema)
    key = SealKey.generate(work_dir / "seal.pem")
    sealed = await seal_closed_days(conn, settings, key, now=datetime.now(UTC))
    print(f"sealed {len(sealed.days)} closed days by the sealing run: {sealed.rooms:,} room-days, "
          f"{sealed.events:,} events in {sealed.seconds:.1f} s", flush=True)  # fmt: skip
    built = await build_sealed(conn, today=datetime.now(UTC).date())
    each = sorted(b.seconds for b in built.built) or [0.0]
    print(f"search indexes built on {len(built.built)} sealed day partitions in {built.seconds:.1f} s "
          f"(per partition: median {statistics.median(each):.1f} s, max {max(each):.1f} s), "
          f"{built.size_bytes / 1e6:,.1f} MB; {len(built.deferred)} deferred", flush=True)  # fmt: skip
    valid = await search_indexes(conn)
    sizes = await conn.fetchrow(
        """SELECT count(*) AS n,
                  coalesce(sum(pg_relation_size(to_regclass(t.relname || '_search'))), 0)::bigint
                      AS index_bytes,
                  coalesce(sum(pg_relation_size(t.oid)), 0)::bigint AS table_bytes
             FROM pg_class t WHERE t.relname = ANY($1::text[]) AND t.relnamespace = $2::regnamespace""",
        [name for name, ok in valid.items() if ok],
        schema,
    )
    assert sizes is not None
    today = f"_p{datetime.now(UTC):%Y%m%d}"
    print(f"search indexes now: {sizes['n']} valid, {sizes['index_bytes'] / 1e6:,.1f} MB "
          f"({sizes['index_bytes'] / max(1, sizes['table_bytes']):.0%} of their partitions' "
          f"{sizes['table_bytes'] / 1e6:,.1f} MB of rows); invalid: {sum(not ok for ok in valid.values())}; "
          f"on the live day: {sum(name.endswith(today) for name in valid)}", flush=True)  # fmt: skip


def bearer(sub: str) -> dict[str, str]:
    claims = {"sub": sub, "exp": int(time.time()) + 7200}
    return {"Authorization": "Bearer " + jwt.encode(claims, JWT_KEY, algorithm="HS256")}


async def timed(
    client: httpx.AsyncClient, url: str, params: dict[str, Any], headers: dict[str, str]
) -> tuple[float, httpx.Response]:
    started = time.perf_counter()
    response = await client.get(url, params=params, headers=headers)
    await response.aread()
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise RuntimeError(f"{url} {params}: {response.status_code} {response.text[:300]}")
    return elapsed, response


def report(name: str, seconds: list[float], goal_ms: float | None = None, extra: str = "") -> None:
    ms = [s * 1000 for s in seconds]
    goal = (
        f"   goal p99 < {goal_ms:g} ms: {'met' if percentile(ms, 99) < goal_ms else 'MISSED'}"
        if goal_ms
        else ""
    )
    print(f"{name:<44} n={len(ms):<4} p50 {percentile(ms, 50):8.1f} ms   p99 {percentile(ms, 99):8.1f} ms   "
          f"max {max(ms):8.1f} ms{goal}{extra}", flush=True)  # fmt: skip


async def measure(dsn: str, api_dsn: str, schema: str, samples: int) -> None:
    settings = ApiSettings(
        postgres_dsn=Secret(api_dsn), jwt_key=Secret(JWT_KEY), jwt_algorithm="HS256",
        cursor_key=Secret(secrets.token_urlsafe(48)), rate_limit_per_second=1e6, rate_limit_burst=1_000_000,
        statement_timeout_seconds=30, max_page_size=500,
    )  # fmt: skip
    admin = await db.connect(dsn, schema)
    busy = await admin.fetch(
        """SELECT room_id, (occurred_at AT TIME ZONE 'UTC')::date AS day, count(*) AS n
             FROM events WHERE room_id = ANY($1::text[]) GROUP BY 1, 2 HAVING count(*) >= 100""",
        [f"room-{r}" for r in range(300)],
    )
    rooms_total = await admin.fetchval("SELECT count(*) FROM rooms")
    top = await admin.fetchrow(
        "SELECT room_id, count(*) AS n FROM events WHERE room_id = ANY($1::text[]) "
        "GROUP BY 1 ORDER BY 2 DESC LIMIT 1",
        [f"room-{r}" for r in range(5)],
    )
    last = await admin.fetchval("SELECT max(occurred_at) FROM events")
    await admin.close()
    if not busy:
        raise SystemExit("no room-day with 100 events: load more events (--events)")
    app = create_app(settings, schema, registry=CollectorRegistry())
    rng = random.Random(7)
    until = last + timedelta(seconds=1)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://api", timeout=600
        ) as client,
    ):
        # warm-up: plans cached, index pages in memory as they would be on a running server
        for r in rng.sample(busy, min(20, len(busy))):
            await timed(
                client,
                f"/v1/rooms/{r['room_id']}/events",
                {"limit": 100},
                bearer(r["room_id"].replace("room", "owner")),
            )

        page: list[float] = []
        for _ in range(samples):
            r = rng.choice(busy)
            day = datetime(r["day"].year, r["day"].month, r["day"].day, tzinfo=UTC)
            params = {"since": day.isoformat(), "until": (day + timedelta(days=1)).isoformat(), "limit": 100,
                      "order": rng.choice(["desc", "asc"])}  # fmt: skip
            seconds, response = await timed(client, f"/v1/rooms/{r['room_id']}/events", params,
                                            bearer(r["room_id"].replace("room", "owner")))  # fmt: skip
            assert len(response.json()["events"]) == 100
            page.append(seconds)
        report("room-day page of 100 events", page, 50)

        week_ago = (until - timedelta(days=7)).isoformat()
        week = {"since": week_ago, "until": until.isoformat(), "q": SEARCH_TERM, "limit": 100}
        typical: list[float] = []
        found = 0
        for _ in range(samples):
            room = f"room-{rng.randrange(rooms_total)}"
            seconds, response = await timed(
                client, f"/v1/rooms/{room}/events", week, bearer(room.replace("room", "owner"))
            )
            found += len(response.json()["events"])
            typical.append(seconds)
        report("text search, 7 days, random room", typical, 200, f"   ({found / samples:.1f} hits/search)")
        busiest: list[float] = []
        for _ in range(max(20, samples // 5)):
            room = f"room-{rng.randrange(20)}"
            seconds, response = await timed(
                client, f"/v1/rooms/{room}/events", week, bearer(room.replace("room", "owner"))
            )
            busiest.append(seconds)
        report("text search, 7 days, 20 busiest rooms", busiest, 200)
        rare = {**week, "q": "nothing-matches-this"}
        no_hit: list[float] = []
        for _ in range(max(10, samples // 20)):
            room = f"room-{rng.randrange(5)}"
            seconds, _ = await timed(
                client, f"/v1/rooms/{room}/events", rare, bearer(room.replace("room", "owner"))
            )
            no_hit.append(seconds)
        report("text search, 7 days, busiest rooms, no hit", no_hit, 50)
        today = datetime.combine(until.date(), datetime.min.time(), tzinfo=UTC)
        live = {**rare, "since": min(today, until - timedelta(hours=1)).isoformat()}
        live_no_hit: list[float] = []
        for _ in range(max(10, samples // 20)):
            room = f"room-{rng.randrange(5)}"
            seconds, _ = await timed(
                client, f"/v1/rooms/{room}/events", live, bearer(room.replace("room", "owner"))
            )
            live_no_hit.append(seconds)
        report("text search, live day, busiest rooms, no hit", live_no_hit, None)

        await users_in_busy_rooms(client, dsn, schema, samples, rng)

        assert top is not None
        if top["n"] < 100_000:
            print(f"export of 100,000 events: skipped (the busiest room has {top['n']:,}; load more events)")
            return
        span = {
            "since": (until - timedelta(days=31)).isoformat(),
            "until": until.isoformat(),
            "limit": 100_000,
        }
        exports: list[float] = []
        size = 0
        for _ in range(max(5, samples // 60)):
            seconds, response = await timed(client, f"/v1/rooms/{top['room_id']}/export", span,
                                            bearer(top["room_id"].replace("room", "owner")))  # fmt: skip
            size = len(response.content)
            assert response.content.count(b"\n") == 100_000
            exports.append(seconds)
        rate = 100_000 / statistics.median(exports)
        report("export of 100,000 events (NDJSON)", exports, None,
               f"   ({size / 1e6:.0f} MB, {rate:,.0f} events/s)")  # fmt: skip


async def users_in_busy_rooms(
    client: httpx.AsyncClient, dsn: str, schema: str, samples: int, rng: random.Random
) -> None:
    """A user's record (user card) and their latest messages in the 5 busiest rooms, for users who chatted
    there; and the same messages through the room's events filtered by actor, which reads every event of
    the room in the range (the user's events endpoint reads only the windows the rollups give)."""
    admin = await db.connect(dsn, schema)
    try:
        chatters = await admin.fetch(
            """SELECT room_id, actor_id FROM room_day_actors
                WHERE room_id = ANY($1::text[]) AND event_type = 'chat.message' AND day >= current_date - 6
                GROUP BY 1, 2""",
            [f"room-{r}" for r in range(5)],
        )
    finally:
        await admin.close()
    if not chatters:
        print("user records: skipped (no chatters in the busiest rooms this week)")
        return
    picks = [rng.choice(chatters) for _ in range(max(20, samples // 5))]
    cards: list[float] = []
    pages: list[float] = []
    by_actor: list[float] = []
    for r in picks:
        owner = bearer(r["room_id"].replace("room", "owner"))
        path = f"/v1/rooms/{r['room_id']}/users/{r['actor_id']}"
        seconds, response = await timed(client, path, {}, owner)
        assert response.json()["actions"].get("chat.message", 0) >= 1
        cards.append(seconds)
        messages = {"type": "chat.message", "limit": 20}
        seconds, response = await timed(client, path + "/events", messages, owner)
        pages.append(seconds)
        n = len(response.json()["events"])
        doc = response.json()
        span = {"since": doc["since"], "until": doc["until"]}
        seconds, response = await timed(
            client, f"/v1/rooms/{r['room_id']}/events", {**messages, **span, "actor": r["actor_id"]}, owner
        )
        assert len(response.json()["events"]) == n
        by_actor.append(seconds)
    report("user record, 5 busiest rooms, 90 days", cards, 150)
    report("user's latest 20 messages, 31 days", pages, 150)
    report("same via room events ?actor=, 31 days", by_actor, None)


async def main_async(args: argparse.Namespace, dsn: str, work_dir: Path) -> None:
    schema = args.schema or f"bench_api_{uuid.uuid4().hex[:8]}"
    conn = await db.connect(dsn, schema)
    try:
        await migrate(conn, schema)
        loaded = await conn.fetchval("SELECT EXISTS (SELECT 1 FROM events LIMIT 1)")
        if loaded:
            print(f"schema {schema} already loaded: measuring only", flush=True)
        else:
            rate = await load(conn, args.events, args.rooms, args.days)
            print(
                f"loaded {args.events:,} events over {args.rooms:,} rooms and {args.days} days "
                f"by binary COPY: {rate:,.0f} events/s (with the indexes in place)",
                flush=True,
            )
        if args.seal:
            await seal(conn, dsn, schema, work_dir)
        sizes = await conn.fetch(
            """SELECT c.relname, sum(pg_total_relation_size(i.inhrelid)) AS bytes
                 FROM pg_class c JOIN pg_inherits p1 ON p1.inhparent = c.oid
                 JOIN pg_inherits i ON i.inhparent = p1.inhrelid
                WHERE c.relname = 'events' AND c.relnamespace = $1::regnamespace GROUP BY 1""",
            schema,
        )
        for s in sizes:
            print(f"events: {float(s['bytes']) / 1e9:.2f} GB with indexes")
        password = secrets.token_hex(16)
        await conn.execute(f"ALTER ROLE {schema}_api PASSWORD '{password}'")
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
    parser.add_argument("--samples", type=int, default=300, help="requests per measured query (default 300)")
    parser.add_argument("--dsn", default="", help="PostgreSQL to use (default: start an embedded one)")
    parser.add_argument("--schema", default="", help="reuse (or create and keep) this schema")
    parser.add_argument(
        "--seal", action="store_true", help="seal the closed days and build their search indexes first"
    )
    add_work_dir_argument(parser)
    args = parser.parse_args()
    with run_dir(args.work_dir, "roomlogs-bench-api-") as work_dir:
        if args.dsn:
            asyncio.run(main_async(args, args.dsn, work_dir))
            return
        with EmbeddedPostgres(work_dir / "postgres", fast=True) as postgres:
            asyncio.run(main_async(args, postgres.dsn, work_dir))


if __name__ == "__main__":
    main()
