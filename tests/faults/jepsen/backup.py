"""The scenario's schema backed up and restored as an operator would, and what the workers made of it.

`dump_schema` runs `pg_dump --format=custom --schema=S`: one consistent snapshot (a repeatable-read
transaction) taken while the workers write. `restore_schema` drops the schema and runs `pg_restore
--no-owner`: the roles the migrations made (`S_worker`, `S_api`) are cluster-wide and still exist, so the
dump's grants apply as they were. Both use the embedded PostgreSQL's own client tools (the wheel's
`bin/`): Debian's are older and refuse its server.

`database_behind` reads back what the workers recorded when they found the restored database behind the
group's offsets committed to Kafka (`offset_changes`, pipeline/ingest/positions.py).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from pipeline.stack.postgres import postgres_bin_dir

from .harness import HarnessError


async def _tool(name: str, *args: str) -> None:
    process = await asyncio.create_subprocess_exec(
        str(postgres_bin_dir() / name),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    if process.returncode != 0:
        tail = output.decode(errors="replace").strip()[-2000:]
        raise HarnessError(f"{name} exited with code {process.returncode}: {tail}")


async def dump_schema(dsn: str, schema: str, path: Path) -> None:
    """A custom-format dump of `schema` (tables, data, grants) to `path`."""
    await _tool("pg_dump", "--format=custom", f"--schema={schema}", "--file", str(path), "--dbname", dsn)


async def restore_schema(dsn: str, schema: str, path: Path) -> None:
    """Drop `schema` and restore it from the dump at `path`. Nobody else may be writing to it."""
    conn = await asyncpg.connect(dsn, timeout=30)
    try:
        await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    finally:
        await conn.close()
    await _tool("pg_restore", "--exit-on-error", "--no-owner", "--dbname", dsn, str(path))


@dataclass(frozen=True)
class Reread:
    """The workers' `database_behind` findings: each one a row of `offset_changes`."""

    #: how many rows (two workers may judge the same partition in turn while the group re-forms)
    findings: int
    #: the sum of their `reread_records`
    recorded: int
    #: per partition, the distinct offsets they announced to read again (overlaps counted once)
    distinct: dict[int, int]


async def database_behind(dsn: str, schema: str, group: str, topic: str) -> Reread:
    conn = await asyncpg.connect(dsn, timeout=30, server_settings={"search_path": schema})
    try:
        rows = await conn.fetch(
            """SELECT partition, to_offset, reread_records FROM offset_changes
                WHERE consumer_group = $1 AND topic = $2 AND kind = 'database_behind'
                ORDER BY partition, to_offset""",
            group,
            topic,
        )
    finally:
        await conn.close()
    distinct: dict[int, int] = {}
    covered_to: dict[int, int] = {}
    for r in rows:  # the union of [to_offset, to_offset + reread_records) per partition
        p, start, end = r["partition"], r["to_offset"], r["to_offset"] + r["reread_records"]
        start = max(start, covered_to.get(p, start))
        distinct[p] = distinct.get(p, 0) + max(0, end - start)
        covered_to[p] = max(end, covered_to.get(p, end))
    return Reread(len(rows), sum(r["reread_records"] for r in rows), distinct)
