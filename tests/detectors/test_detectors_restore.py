"""Alerts after PostgreSQL is restored from a dump taken while events kept flowing: the worker reads again
what the restored database lacks (README, When the log under the offsets changes), the detectors raise
again the alerts the dump did not have, under the same keys and ids, and none twice."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from detector_support import alert_ids, mixed_records, produce_raw
from topic_support import sql

from pipeline.settings import Settings
from pipeline.stack.postgres import postgres_bin_dir


def dump_schema(settings: Settings, path: Path) -> None:
    subprocess.run(
        [str(postgres_bin_dir() / "pg_dump"), "--format=custom", f"--schema={settings.postgres_schema}",
         "--file", str(path), "--dbname", settings.postgres_dsn.get()],
        check=True,
    )  # fmt: skip


def restore_schema(settings: Settings, path: Path) -> None:
    dsn, bin_dir = settings.postgres_dsn.get(), postgres_bin_dir()
    subprocess.run(
        [str(bin_dir / "psql"), "--quiet", "--dbname", dsn,
         "-c", f'DROP SCHEMA "{settings.postgres_schema}" CASCADE'],
        check=True,
    )  # fmt: skip
    subprocess.run([str(bin_dir / "pg_restore"), "--dbname", dsn, "--no-owner", str(path)], check=True)


async def test_alerts_come_back_once_with_their_ids_after_a_restore(
    ingest_settings: Settings, ingest_worker: Any, tmp_path: Path
) -> None:
    s = ingest_settings
    records = mixed_records()
    half = len(records) // 2
    await produce_raw(s, records[:half])
    dump = tmp_path / "roomlogs.dump"
    async with ingest_worker(s) as w:
        assert await w.caught_up(120)
        dump_schema(s, dump)
        await produce_raw(s, records[half:])
        assert await w.caught_up(120)
    full = await alert_ids(s)
    assert full, "the scenarios raise alerts"

    restore_schema(s, dump)
    assert len(await alert_ids(s)) < len(full), "the dump lacks the later alerts"
    async with ingest_worker(s) as w:
        assert await w.caught_up(120)
    assert await alert_ids(s) == full
    (row,) = await sql(s, "SELECT count(*) AS n, count(DISTINCT alert_id) AS ids FROM alerts")
    assert row["n"] == row["ids"] == len(full)
