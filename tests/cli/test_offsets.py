"""`roomlogs offsets` and `roomlogs status` when the offsets of record do not fit the broker's log: shown
plainly, moved by an operator (dry by default, audited), followed by a running worker."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from topic_support import create_topic, events, publish, sql, wait_for_rows

from pipeline.cli.offsets import COMMANDS as OFFSETS
from pipeline.cli.offsets import add_commands as add_offsets
from pipeline.cli.status import COMMANDS as STATUS
from pipeline.cli.status import add_commands as add_status
from pipeline.settings import Settings
from pipeline.stack import EmbeddedKafka


def _run(settings: Settings, add: Any, commands: dict[str, Any], argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="roomlogs")
    add(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    code: int = commands[argv[0]](settings, args)
    return code


async def roomlogs(settings: Settings, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    add, commands = (add_status, STATUS) if argv[0] == "status" else (add_offsets, OFFSETS)
    code = await asyncio.to_thread(_run, settings, add, commands, list(argv))
    return code, capsys.readouterr().out


async def test_status_and_offsets_show_a_stored_offset_past_the_end_as_an_error(
    ingest_settings: Settings, ingest_worker: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The broker came back empty: status must not say "lag 0", and must exit non-zero."""
    kafka = EmbeddedKafka(tmp_path / "k")
    kafka.start()
    try:
        s = ingest_settings.replace(kafka_bootstrap=kafka.bootstrap)
        await create_topic(s.kafka_bootstrap, s.events_topic, 3)
        await publish(s.kafka_bootstrap, s.events_topic, events(300))
        async with ingest_worker(s) as w:
            assert await w.caught_up(60)
        code, out = await roomlogs(s, capsys, "status")
        assert code == 0 and "ERROR" not in out, out
        kafka.stop()
        kafka.start()
        await create_topic(s.kafka_bootstrap, s.events_topic, 3)
        await publish(s.kafka_bootstrap, s.events_topic, events(12, start=900))

        code, out = await roomlogs(s, capsys, "status", "--json")
        status = orjson.loads(out)
        assert code == 1
        assert status["problems"] == [0, 1, 2]
        assert status["total_lag"] < 0  # stored past the end: not clamped to 0
        assert all(p["finding"] == "new_log" and p["lag"] < 0 for p in status["partitions"])
        code, out = await roomlogs(s, capsys, "status")
        assert code == 1 and out.count("ERROR partition") == 3 and "ERROR another log" in out, out
        code, out = await roomlogs(s, capsys, "offsets", "show")
        assert code == 1 and "new_log" in out, out
    finally:
        kafka.stop()


async def test_offsets_move_is_dry_by_default_audited_and_followed_by_a_running_worker(
    ingest_settings: Settings, ingest_worker: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    s = ingest_settings
    first = events(200)
    await publish(s.kafka_bootstrap, s.events_topic, first)
    async with ingest_worker(s) as w:
        assert await w.caught_up(60)
        before = {r["partition"]: r["next_offset"] for r in await sql(s, "SELECT * FROM ingest_offsets")}

        code, out = await roomlogs(s, capsys, "offsets", "move", "--to", "beginning", "--by", "ana")
        assert code == 0 and "nothing moved" in out and out.count("would move partition") == 3, out
        assert {
            r["partition"]: r["next_offset"] for r in await sql(s, "SELECT * FROM ingest_offsets")
        } == before

        # back to the beginning while the worker runs: it reads everything again, stores nothing twice
        code, out = await roomlogs(
            s, capsys, "offsets", "move", "--to", "beginning", "--by", "ana", "--reason", "INC-42", "--apply"
        )
        assert code == 0 and out.count("moved partition") == 3, out
        more = events(30, start=5000)
        await publish(s.kafka_bootstrap, s.events_topic, more)
        assert await wait_for_rows(s, len(first) + len(more)) == len(first) + len(more)
        assert await w.caught_up(60)
        assert w.service.totals["duplicates"] == len(first)
    rows = await sql(s, "SELECT event_id FROM events")
    assert len(rows) == len({r["event_id"] for r in rows}) == len(first) + len(more)

    moves = await sql(s, "SELECT * FROM offset_changes WHERE kind = 'moved' ORDER BY partition")
    assert [m["partition"] for m in moves] == [0, 1, 2]
    assert all(m["changed_by"] == "ana" and "INC-42" in m["detail"] for m in moves)
    assert {m["partition"]: m["reread_records"] for m in moves} == before
    # the worker noticed the move through its own write, not by recording a database behind Kafka
    assert not await sql(s, "SELECT 1 FROM offset_changes WHERE kind = 'database_behind'")

    code, out = await roomlogs(s, capsys, "offsets", "history", "--kind", "moved", "--json")
    listed = [orjson.loads(line) for line in out.splitlines()]
    assert code == 0 and len(listed) == 3 and all(x["changed_by"] == "ana" for x in listed)


async def test_offsets_move_to_the_end_counts_what_it_skips(
    ingest_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    s = ingest_settings
    await publish(s.kafka_bootstrap, s.events_topic, events(90))
    code, out = await roomlogs(
        s, capsys, "offsets", "move", "--to", "end", "--partition", "1", "--by", "bo", "--apply"
    )
    assert code == 0, out
    moved = await sql(s, "SELECT * FROM offset_changes")
    assert len(moved) == 1 and moved[0]["partition"] == 1
    stored = await sql(s, "SELECT next_offset FROM ingest_offsets WHERE partition = 1")
    assert moved[0]["skipped_records"] == stored[0]["next_offset"] > 0
    code, out = await roomlogs(s, capsys, "status", "--json")
    skipped = {p["partition"]: p["skipped_ever"] for p in orjson.loads(out)["partitions"]}
    assert skipped == {0: 0, 1: moved[0]["skipped_records"], 2: 0}


async def test_offsets_move_applies_while_a_worker_keeps_writing_the_partitions(
    ingest_settings: Settings, ingest_worker: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """An outside tester's `offsets move --apply` on a busy partition said "changed meanwhile" 6 times of 6:
    a running worker wrote a batch between the plan and the move. The move now takes the same target from
    what is stored now and tries again at once (20 times at most), so it goes through while a worker
    writes the partition every few milliseconds (without: 3 failures of 3); nothing is stored twice."""
    s = ingest_settings.replace(batch_max_wait_seconds=0.01)
    first = events(150)
    await publish(s.kafka_bootstrap, s.events_topic, first)
    flowing: list[dict[str, Any]] = []

    stop = asyncio.Event()

    async def trickle() -> None:  # a batch of every partition every few milliseconds
        producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap, acks="all", linger_ms=1)
        await producer.start()
        try:
            n = 20_000
            while not stop.is_set():
                for e in events(6, start=n):
                    await producer.send(s.events_topic, orjson.dumps(e), key=e["room_id"].encode())
                    flowing.append(e)
                n += 6
                await producer.flush()
        finally:
            await producer.stop()

    async with ingest_worker(s) as w:
        assert await w.caught_up(60)
        feeding = asyncio.ensure_future(trickle())
        try:
            await asyncio.sleep(1.0)
            code, out = await roomlogs(
                s, capsys, "offsets", "move", "--to", "beginning", "--by", "ana", "--apply"
            )
        finally:
            stop.set()
            await feeding
        assert code == 0 and out.count("moved partition") == 3, out
        total = len(first) + len(flowing)
        assert await wait_for_rows(s, total) == total
        assert await w.caught_up(60)
    rows = await sql(s, "SELECT event_id FROM events")
    assert len(rows) == len({r["event_id"] for r in rows}) == total
