"""A day of events dropped by retention takes its alert table (migration 0017) with it, in the same
transaction; the alerts of the days kept are untouched."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time, timedelta

import asyncpg
from conftest import StoreEvents
from retention_support import NOON, days_ago

from pipeline.retention import maintain
from pipeline.settings import Settings
from pipeline.storage import alerts, catalog
from pipeline.storage.alerts import Alert

EXPIRED = days_ago(15)  # public keeps 14 days
KEPT = days_ago(2)


def _alert(day: date) -> Alert:
    at = datetime.combine(day, time(12), tzinfo=UTC)
    return Alert(
        "public", "r1", "chat_flood", "u-1", at, at, at + timedelta(seconds=10), ("u-1",), {}, (uuid.uuid4(),)
    )


async def test_a_dropped_day_takes_its_alerts_with_it(
    conn: asyncpg.Connection, settings: Settings, store_events: StoreEvents
) -> None:
    await store_events("public", EXPIRED, {"r1": 3})
    await store_events("public", KEPT, {"r1": 4})
    await alerts.insert(conn, [_alert(EXPIRED), _alert(KEPT)])

    report = await maintain(conn, settings, now=NOON)

    assert [d.partition for d in report.dropped] == [f"events_public_p{EXPIRED:%Y%m%d}"], report.render()
    [(_, _, gone)] = alerts.day_partitions("public", EXPIRED)
    [(_, _, kept)] = alerts.day_partitions("public", KEPT)
    assert await catalog.state_of(conn, gone) is None
    assert await catalog.state_of(conn, kept) == "attached"
    assert [k[3].date() for k in await alerts.alert_keys(conn)] == [KEPT]
