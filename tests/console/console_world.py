"""The room console's test world: rooms made by the real pipeline, and a live API + console server.

Events are published with the real publisher to a topic of their own and stored by the real ingest loop,
which keeps running for the whole session: a test publishes a new event and the browser's live view shows
it. The API serves the console on 127.0.0.1 (uvicorn in the test's event loop) through its own database
role, as in production.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import jwt
import uvicorn
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client import CollectorRegistry

from pipeline.api import ApiSettings, create_app
from pipeline.api.context import ApiState
from pipeline.api.trust import install, token_trust
from pipeline.console import mount, sign_in_link
from pipeline.events.contract import EventType
from pipeline.ingest.service import IngestService
from pipeline.metrics import IngestMetrics
from pipeline.publisher import events as ev
from pipeline.publisher.client import RoomEventPublisher
from pipeline.settings import Secret, Settings
from pipeline.storage import db
from pipeline.storage.migrate import migrate

JWT_KEY = "console-test-signing-key-" + "k" * 40
CURSOR_KEY = "console-test-cursor-key-" + "c" * 40
TICKET = "SUP-77"
NOW = datetime.now(UTC).replace(microsecond=0)
TODAY = NOW.date()

OWNER = ev.user("u-owner", "Ann the owner")
MOD = ev.user("u-mod", "Mo the moderator")
MOD_LIVE = ev.user("u-mod-live", "Liv, moderator for now")
REVOKED = ev.user("u-revoked", "Rex, no longer a moderator")
GUEST = ev.user("u-guest", "Gus")
TARGET = ev.user("u-target", "Troublemaker")
OWNER2 = ev.user("u-owner2", "Otto")
#: the longest display name the contract allows, with no space to wrap at
LONG_NAME = "W" * 64
LONG = ev.user("u-long-name", LONG_NAME)
#: a display name holding a right-to-left override: it must not reorder the trusted id drawn after it
RLO_NAME = "\u202eevil twin"
RLO = ev.user("u-rlo-user", RLO_NAME)

#: A chat line that tries to run script: the console must show it as typed and run nothing.
SCRIPT_PAYLOAD = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script><b>bold?</b>'
NEEDLE = "lighthouse"


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def day_at(days_ago: int, hour: int, minute: int = 0) -> datetime:
    d = TODAY - timedelta(days=days_ago)
    return datetime(d.year, d.month, d.day, hour, minute, tzinfo=UTC)


def scripted_events() -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Events in publish order, and the ids of the ones tests look up by name."""
    out: list[dict[str, Any]] = []
    names: dict[str, str] = {}

    def at(moment: datetime, event: dict[str, Any], name: str | None = None) -> None:
        event["event_id"] = str(uuid.uuid4())
        event["occurred_at"] = stamp(moment)
        out.append(event)
        if name:
            names[name] = event["event_id"]

    t = day_at(3, 9)
    step = timedelta(seconds=30)
    for room, owner in (("room-1", OWNER), ("room-2", OWNER2), ("room-del", OWNER)):
        at(t, ev.settings_changed(room, owner, {"privacy": (None, "private"), "max_occupancy": (None, 20)}))
        t += step
        at(t, ev.permissions_changed(room, None, "owner_transferred", owner))
        t += step
    for moderator in (MOD, MOD_LIVE, REVOKED):
        at(t, ev.permissions_changed("room-1", OWNER, "moderator_added", moderator))
        t += step
    at(day_at(3, 10), ev.user_entered("room-1", GUEST), "entered")
    at(day_at(3, 10, 1), ev.chat_message("room-1", GUEST, "hello room"), "hello")
    at(day_at(3, 10, 2), ev.chat_message("room-1", TARGET, "buy cheap credits now"), "spam1")
    at(day_at(3, 10, 3), ev.moderation(EventType.MOD_WARN, "room-1", MOD, TARGET, "spamming"), "warn")
    at(day_at(3, 10, 4), ev.gift_sent("room-1", OWNER, GUEST, "rose-1", 5, item_name="Rose"), "gift")
    at(day_at(3, 10, 5), ev.user_left("room-1", GUEST, "quit"))
    # names that test the console's layout and bidirectional isolation, two days ago
    at(day_at(2, 12), ev.user_entered("room-1", LONG), "long_entered")
    long_line = "a chat line next to the longest name " * 3
    at(day_at(2, 12, 1), ev.chat_message("room-1", LONG, long_line), "long_chat")
    at(day_at(2, 12, 2), ev.chat_message("room-1", RLO, "hello from the override"), "rlo_chat")
    # the reported conversation, a day ago
    at(day_at(1, 20, 0), ev.user_entered("room-1", TARGET))
    for i in range(5):
        at(
            day_at(1, 20, 1 + i),
            ev.chat_message("room-1", GUEST, f"before the report, line {i}"),
            f"before{i}",
        )
    at(day_at(1, 20, 10), ev.chat_message("room-1", TARGET, SCRIPT_PAYLOAD), "script")
    at(day_at(1, 20, 11), ev.chat_message("room-1", GUEST, f"did you see the {NEEDLE}?"), "needle")
    at(day_at(1, 20, 12), ev.moderation(EventType.MOD_MUTE, "room-1", MOD, TARGET, "script spam",
                                        duration_seconds=600), "mute")  # fmt: skip
    for i in range(3):
        at(
            day_at(1, 20, 13 + i),
            ev.chat_message("room-1", GUEST, f"after the report, line {i}"),
            f"after{i}",
        )
    at(day_at(1, 21), ev.chat_message("room-2", TARGET, "the secret of room two"), "room2_chat")
    at(day_at(1, 21, 1), ev.chat_message("room-del", GUEST, "soon to be deleted"), "del_chat")
    # today's, even in the first half hour after midnight UTC (then NOW - 30 min was yesterday's: day(1)
    # had 13 events, today none, and the calendar tests failed from 00:00 to 00:30)
    midnight = datetime(TODAY.year, TODAY.month, TODAY.day, tzinfo=UTC)
    good_morning = max(NOW - timedelta(minutes=30), midnight + timedelta(seconds=1))
    at(good_morning, ev.chat_message("room-1", GUEST, "good morning"), "today")
    # revoked last: the world's current state has u-revoked as a former moderator of room-1
    revoked = max(NOW - timedelta(minutes=20), midnight + timedelta(seconds=2))
    at(revoked, ev.permissions_changed("room-1", OWNER, "moderator_removed", REVOKED))
    return out, names


def api_settings(**overrides: Any) -> ApiSettings:
    base: dict[str, Any] = {
        "jwt_key": Secret(JWT_KEY),
        "jwt_algorithm": "HS256",
        "cursor_key": Secret(CURSOR_KEY),
        "rate_limit_per_second": 1000.0,
        "rate_limit_burst": 1000,
        "tail_poll_seconds": 0.2,
        # short streams, so a live view also reconnects (with Last-Event-ID) during a test
        "tail_max_seconds": 4.0,
        "max_streams_per_caller": 4,
    }
    base.update(overrides)
    return ApiSettings(**base)


def token(sub: str, *, staff: bool = False, ttl: float = 300) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {"sub": sub, "iat": now, "exp": now + int(ttl), "jti": secrets.token_hex(16)}
    if staff:
        claims["roles"] = ["support_staff"]
    return jwt.encode(claims, JWT_KEY, algorithm="HS256")


def role_dsn(dsn: str, role: str, password: str) -> str:
    parts = urlsplit(dsn)
    netloc = f"{role}:{password}@{parts.hostname or '127.0.0.1'}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@dataclass
class ConsoleWorld:
    schema: str
    dsn: str
    api_pool: asyncpg.Pool
    settings: Settings
    #: None in a world whose rows are written directly (no Kafka, no ingest)
    publisher: RoomEventPublisher | None
    ingest: IngestService | None
    ids: dict[str, str] = field(default_factory=dict)
    base_url: str = ""
    api_state: ApiState | None = None

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        conn = await db.connect(self.dsn, self.schema)
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    async def publish(self, event: dict[str, Any], *, wait: bool = False) -> str:
        """Publish one event through the real pipeline; with `wait`, until the worker has stored it."""
        event.setdefault("event_id", str(uuid.uuid4()))
        event.setdefault("occurred_at", stamp(datetime.now(UTC)))
        assert self.publisher is not None, "this world has no pipeline to publish through"
        await self.publisher.send(event)
        await self.publisher.flush()
        if wait:
            deadline = time.monotonic() + 60
            while not await self.fetch(
                "SELECT 1 FROM events WHERE event_id = $1", uuid.UUID(event["event_id"])
            ):
                assert time.monotonic() < deadline, f"event {event['event_id']} was not stored"
                await asyncio.sleep(0.1)
        return str(event["event_id"])

    def link(self, sub: str, *, staff: bool = False, next_page: str | None = None) -> str:
        return sign_in_link(self.base_url, token(sub, staff=staff), next_page=next_page)

    async def audit(self, subject: str, **where: Any) -> list[asyncpg.Record]:
        clauses = ["subject = $1"] + [f"{k} = ${i}" for i, k in enumerate(where, start=2)]
        return await self.fetch(
            f"SELECT * FROM access_audit WHERE {' AND '.join(clauses)} ORDER BY audit_id",
            subject,
            *where.values(),
        )


async def _wait_stored(ingest: IngestService, expected: int) -> None:
    deadline = time.monotonic() + 90
    while ingest.totals["stored"] < expected:
        assert time.monotonic() < deadline, f"ingest stored {ingest.totals} of {expected}"
        assert ingest.totals["dead_lettered"] == 0, ingest.totals
        await asyncio.sleep(0.1)


@asynccontextmanager
async def console_world(kafka_bootstrap: str, dsn: str) -> AsyncIterator[ConsoleWorld]:
    schema, api_pool = await new_schema(dsn)
    topic, dlq = f"console-ev-{uuid.uuid4().hex[:8]}", f"console-dlq-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, 2, 1), NewTopic(dlq, 1, 1)])
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap,
        events_topic=topic,
        events_topic_partitions=2,
        dead_letter_topic=dlq,
        consumer_group=f"g-{uuid.uuid4().hex[:8]}",
        postgres_dsn=Secret(dsn),
        postgres_schema=schema,
        batch_max_wait_seconds=0.05,
    )
    ingest_pool = await db.create_pool(dsn, schema, 2)
    ingest = IngestService(settings, ingest_pool, IngestMetrics(CollectorRegistry()))
    publisher = RoomEventPublisher.from_settings(settings)
    await publisher.start()
    running: asyncio.Task[Any] | None = None
    try:
        events, names = scripted_events()
        for event in events:
            await publisher.send(event)
        await publisher.flush()
        await ingest.start()
        running = asyncio.create_task(ingest.run())
        await _wait_stored(ingest, len(events))
        yield ConsoleWorld(schema, dsn, api_pool, settings, publisher, ingest, ids=names)
    finally:
        with suppress(Exception):
            await publisher.close()
        if running is not None:
            await ingest.stop()
            await running
        await ingest.close()
        await ingest_pool.close()
        await api_pool.close()
        try:
            await admin.delete_topics([topic, dlq])
        finally:
            await admin.close()
        await drop_schema(dsn, schema)


async def new_schema(dsn: str) -> tuple[str, asyncpg.Pool]:
    """A migrated schema of its own, trusting the tests' token key, and a pool as its API role."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    conn = await db.connect(dsn, schema)
    try:
        await migrate(conn, schema)
        password = secrets.token_hex(16)
        await conn.execute(f"ALTER ROLE {schema}_api PASSWORD '{password}'")
        # what `roomlogs api trust-key` does: the database verifies callers with the API's token key
        await install(conn, token_trust(api_settings()))
    finally:
        await conn.close()
    return schema, await db.create_pool(role_dsn(dsn, f"{schema}_api", password), schema, 4)


async def drop_schema(dsn: str, schema: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        for role in (f"{schema}_api", f"{schema}_worker"):
            await conn.execute(f'DROP OWNED BY "{role}"')
            await conn.execute(f'DROP ROLE IF EXISTS "{role}"')
    finally:
        await conn.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def console_server(
    world: ConsoleWorld, port: int | None = None, **overrides: Any
) -> AsyncIterator[str]:
    """The API with the console mounted, served on 127.0.0.1 in this event loop (on `port`, else a free
    one: a port chosen first lets settings name it, as single sign-on's redirect URL does); yields its base
    URL."""
    states: list[ApiState] = []
    app = mount(
        create_app(
            api_settings(**overrides), world.schema, pool=world.api_pool, registry=CollectorRegistry(),
            state_hook=states.append,
        )
    )  # fmt: skip
    port = port or free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="on", log_level="warning",
                       timeout_graceful_shutdown=5)
    )  # fmt: skip
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 30
    while not server.started:
        assert not task.done(), "the console server did not start"
        assert time.monotonic() < deadline, "the console server did not start within 30 s"
        await asyncio.sleep(0.05)
    world.api_state = states[0]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        states[0].closing = True
        server.should_exit = True
        await task
