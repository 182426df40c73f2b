"""Helpers of the query API's tests: a world of rooms loaded through the real pipeline, tokens.

`pipeline_world` (once per session) publishes a scripted set of room events with the real publisher, runs
the real ingest loop until they are stored, and opens a pool as the API's own database role. The world is
read-only for the tests that use it; tests that delete use `small_world` (loaded by binary COPY, one
schema per test).
"""

from __future__ import annotations

import asyncio
import math
import secrets
import time
import uuid
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import jwt
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client import CollectorRegistry

from pipeline.api import ApiSettings
from pipeline.api.trust import install, token_trust
from pipeline.events.contract import EventType
from pipeline.ingest.service import IngestService
from pipeline.metrics import IngestMetrics
from pipeline.publisher import events as ev
from pipeline.publisher.client import RoomEventPublisher
from pipeline.settings import Secret, Settings
from pipeline.storage import db
from pipeline.storage.migrate import migrate
from pipeline.storage.partitions import PartitionManager

JWT_KEY = "test-signing-key-" + "k" * 60
CURSOR_KEY = "test-cursor-key-" + "c" * 40
STAFF_TICKET = "SUP-1234"
NOW = datetime.now(UTC).replace(microsecond=0)

ANN = ev.user("u-owner", "Ann the owner")
MOD = ev.user("u-mod", "Mo the moderator")
REVOKED = ev.user("u-revoked", "Rex, no longer a moderator")
GUEST = ev.user("u-guest", "Gus")
TARGET = ev.user("u-target", "Troublemaker")
OWNER2 = ev.user("u-owner2", "Otto")
OTHER = ev.user("u-other", "Ola")

#: Chat lines of room-1 by u-guest; a few look like attacks and must be matched literally.
CHAT_LINES = (
    "hello room",
    "100% legit_offer",
    "robert'); DROP TABLE events;--",
    '=HYPERLINK("http://evil.example")',
    "see you tomorrow",
    "Hello again, ROOM",
)


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def api_settings(**overrides: Any) -> ApiSettings:
    base: dict[str, Any] = {
        "jwt_key": Secret(JWT_KEY),
        "jwt_algorithm": "HS256",
        "cursor_key": Secret(CURSOR_KEY),
        "rate_limit_per_second": 1000.0,
        "rate_limit_burst": 1000,
        "tail_poll_seconds": 0.05,
        "tail_max_seconds": 1.0,
    }
    base.update(overrides)
    return ApiSettings(**base)


#: what test tokens live for (`bearer` mints a new one after half of it)
TOKEN_TTL_SECONDS = 300


def token(
    sub: str, *, key: str = JWT_KEY, algorithm: str = "HS256", ttl: float = TOKEN_TTL_SECONDS, **claims: Any
) -> str:
    now = int(time.time())
    # jti: each token opens one console session at most (migration 0019), as providers' tokens carry one
    body = {"sub": sub, "iat": now, "exp": now + int(ttl), "jti": uuid.uuid4().hex, **claims}
    return jwt.encode(body, key, algorithm=algorithm)


class Bearer(MutableMapping[str, str]):
    """Request headers with `Authorization: Bearer <token>`, the token minted when the headers are sent, and
    again once half its lifetime has passed: headers made at import or collection (module constants,
    parametrize lists) still work in a suite that runs longer than a token lives."""

    def __init__(self, sub: str, claims: dict[str, Any]) -> None:
        self._sub, self._claims = sub, claims
        self._token, self._minted = "", -math.inf
        self._other: dict[str, str] = {}

    def _authorization(self) -> str:
        if time.monotonic() - self._minted > TOKEN_TTL_SECONDS / 2:
            self._token = token(self._sub, ttl=TOKEN_TTL_SECONDS, **self._claims)
            self._minted = time.monotonic()
        return f"Bearer {self._token}"

    def __getitem__(self, name: str) -> str:
        return self._authorization() if name == "Authorization" else self._other[name]

    def __setitem__(self, name: str, value: str) -> None:
        if name == "Authorization":
            raise KeyError("Authorization is minted from the subject and claims")
        self._other[name] = value

    def __delitem__(self, name: str) -> None:
        del self._other[name]

    def __iter__(self) -> Iterator[str]:
        yield "Authorization"
        yield from self._other

    def __len__(self) -> int:
        return 1 + len(self._other)


def bearer(sub: str, **claims: Any) -> Bearer:
    return Bearer(sub, claims)


def staff(sub: str = "s-staff", reason: str | None = STAFF_TICKET) -> Bearer:
    headers = bearer(sub, roles=["support_staff"])
    if reason is not None:
        headers["X-Access-Reason"] = reason
    return headers


def service(sub: str, *scopes: str) -> Bearer:
    return bearer(sub, kind="service", scope=" ".join(scopes))


def role_dsn(dsn: str, role: str, password: str) -> str:
    parts = urlsplit(dsn)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{role}:{password}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@dataclass
class World:
    schema: str
    dsn: str
    api_dsn: str
    api_pool: asyncpg.Pool
    #: event ids by name, for lookups
    ids: dict[str, str] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    async def admin(self) -> asyncpg.Connection:
        return await db.connect(self.dsn, self.schema)

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        conn = await self.admin()
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    async def audit_rows(self, request_id: str) -> list[asyncpg.Record]:
        return await self.fetch(
            "SELECT * FROM access_audit WHERE request_id = $1 ORDER BY audit_id", uuid.UUID(request_id)
        )


async def new_schema(dsn: str) -> tuple[str, str, asyncpg.Pool]:
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
    api_dsn = role_dsn(dsn, f"{schema}_api", password)
    pool = await db.create_pool(api_dsn, schema, 4)
    return schema, api_dsn, pool


async def drop_schema(dsn: str, schema: str, pool: asyncpg.Pool) -> None:
    await pool.close()
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        for role in (f"{schema}_api", f"{schema}_worker"):
            await conn.execute(f'DROP OWNED BY "{role}"')
            await conn.execute(f'DROP ROLE IF EXISTS "{role}"')
    finally:
        await conn.close()


def scripted_events() -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The world's events in publish order, and the ids of the ones tests look up."""
    t = NOW - timedelta(hours=3)
    out: list[dict[str, Any]] = []
    names: dict[str, str] = {}

    def add(event: dict[str, Any], name: str | None = None) -> None:
        nonlocal t
        t += timedelta(seconds=7)
        event["event_id"] = str(uuid.uuid4())
        event["occurred_at"] = stamp(t)
        out.append(event)
        if name:
            names[name] = event["event_id"]

    for room, owner in (("room-1", ANN), ("room-2", OWNER2), ("room-3", OTHER)):
        add(ev.settings_changed(room, owner, {"privacy": (None, "private"), "max_occupancy": (None, 20)}))
        add(ev.permissions_changed(room, None, "owner_transferred", owner))
    add(ev.permissions_changed("room-1", ANN, "moderator_added", MOD))
    add(ev.permissions_changed("room-1", ANN, "moderator_added", REVOKED))
    add(ev.permissions_changed("room-2", OWNER2, "moderator_added", MOD))
    add(ev.user_entered("room-1", GUEST), "entered")
    for i, line in enumerate(CHAT_LINES):
        add(ev.chat_message("room-1", GUEST, line), f"chat{i}")
    add(ev.chat_message("room-1", TARGET, "spam spam spam"), "target_chat")
    add(ev.moderation(EventType.MOD_WARN, "room-1", MOD, TARGET, "spamming"), "warn1")
    add(
        ev.moderation(EventType.MOD_MUTE, "room-1", MOD, TARGET, "still spamming", duration_seconds=600),
        "mute1",
    )
    add(ev.moderation(EventType.MOD_KICK, "room-1", ANN, TARGET, "out"), "kick1")
    add(ev.gift_sent("room-1", ANN, GUEST, "rose-1", 5, item_name="Rose"), "gift1")
    add(ev.user_left("room-1", GUEST, "quit"))
    add(ev.chat_message("room-2", TARGET, "hello room two"), "room2_chat")
    add(
        ev.moderation(
            EventType.MOD_BAN, "room-2", OWNER2, TARGET, "banned in two", duration_seconds=None, timed=True
        ),
        "ban2",
    )
    add(ev.chat_message("room-3", TARGET, "hello room three"), "room3_chat")
    add(ev.moderation(EventType.MOD_WARN, "room-3", OTHER, TARGET, "warned in three"), "warn3")
    # revoked last: the world's current state has u-revoked as a former moderator of room-1
    add(ev.permissions_changed("room-1", ANN, "moderator_removed", REVOKED))
    return out, names


async def run_pipeline(kafka_bootstrap: str, dsn: str, schema: str, events: list[dict[str, Any]]) -> None:
    """Publish `events` with the real publisher and run the real ingest until all of them are stored."""
    topic, dlq = f"api-ev-{uuid.uuid4().hex[:8]}", f"api-dlq-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 3, 1), NewTopic(dlq, 1, 1)])
        settings = Settings(
            kafka_bootstrap=kafka_bootstrap,
            events_topic=topic,
            events_topic_partitions=3,
            dead_letter_topic=dlq,
            consumer_group=f"g-{uuid.uuid4().hex[:8]}",
            postgres_dsn=Secret(dsn),
            postgres_schema=schema,
            batch_max_wait_seconds=0.05,
        )
        async with RoomEventPublisher.from_settings(settings) as publisher:
            for event in events:
                await publisher.send(event)
        pool = await db.create_pool(dsn, schema, 2)
        service = IngestService(settings, pool, IngestMetrics(CollectorRegistry()))
        await service.start()
        task = asyncio.create_task(service.run())
        try:
            deadline = time.monotonic() + 90
            while service.totals["stored"] < len(events):
                assert time.monotonic() < deadline, f"ingest stored {service.totals} of {len(events)}"
                assert service.totals["dead_lettered"] == 0, service.totals
                await asyncio.sleep(0.1)
        finally:
            await service.stop()
            await task
            await service.close()
            await pool.close()
    finally:
        try:
            await admin.delete_topics([topic, dlq])
        finally:
            await admin.close()


# --- small worlds for tests that delete ---------------------------------------------------------------------
SMALL_ROOMS = {"room-a": ("u-owner", ["u-mod"]), "room-b": ("u-owner-b", [])}


def small_rows(
    room: str, n: int, start: datetime, *, actors: tuple[str, ...] = ("u-chat", "u-other")
) -> list[tuple[Any, ...]]:
    rows = []
    for i in range(n):
        actor = actors[i % len(actors)]
        etype = "chat.message" if i % 3 else "user.entered"
        body = f"line {i} from {actor}" if etype == "chat.message" else None
        payload = {"actor": {"user_id": actor}}
        rows.append(
            (
                uuid.uuid4(),
                start + timedelta(seconds=i),
                "private",
                room,
                etype,
                1,
                actor,
                None,
                body,
                payload,
                0,
                i,
            )
        )
    return rows


async def load_rows(conn: asyncpg.Connection, rows: list[tuple[Any, ...]]) -> None:
    from pipeline.storage.batch import EVENT_COLUMNS

    partitions = PartitionManager()
    await partitions.load(conn)
    await partitions.ensure(conn, {(r[2], r[1].astimezone(UTC).date()) for r in rows})
    await conn.copy_records_to_table("events", records=rows, columns=EVENT_COLUMNS)


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


RANGE = {"since": iso(NOW - timedelta(hours=6)), "until": iso(NOW + timedelta(hours=1))}
