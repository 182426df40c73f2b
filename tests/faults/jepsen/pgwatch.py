"""What a worker's PostgreSQL sessions are doing, seen from pg_stat_activity.

Faults that freeze a worker (SIGSTOP) or cut its link leave its sessions on the server as they were: a
write transaction the fault caught stays open, with the row locks of the offsets of record it took. The
scenarios use this to time a fault against the worker's transactions and to measure how long the other
sessions waited on those locks.
"""

from __future__ import annotations

import asyncpg
import psutil

from .group import Worker

_IN_TRANSACTION = (
    """SELECT count(*) FROM pg_stat_activity WHERE pid = ANY ($1::int[]) AND xact_start IS NOT NULL"""
)
_BLOCKED_BY = """SELECT count(*) FROM pg_stat_activity
                  WHERE wait_event_type = 'Lock' AND pg_blocking_pids(pid) && $1::int[]"""


async def backends(conn: asyncpg.Connection, worker: Worker, postgres_port: int) -> list[int]:
    """Server pids of `worker`'s sessions: matched by its namespace address, or by the local ports of its
    connections to `postgres_port` (readable from /proc even while it is stopped)."""
    host = worker.settings.metrics_host
    if host != "127.0.0.1":  # in a network namespace: every connection comes from its own address
        rows = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE client_addr = $1::inet", host)
        return [r["pid"] for r in rows]
    if worker.proc is None:
        return []
    process = psutil.Process(worker.proc.pid)
    connections = getattr(process, "net_connections", None) or process.connections  # psutil < 6
    try:
        ports = [c.laddr.port for c in connections(kind="tcp") if c.raddr and c.raddr.port == postgres_port]
    except psutil.Error:
        return []
    rows = await conn.fetch(
        "SELECT pid FROM pg_stat_activity WHERE client_addr = '127.0.0.1' AND client_port = ANY ($1::int[])",
        ports,
    )
    return [r["pid"] for r in rows]


async def in_transaction(conn: asyncpg.Connection, pids: list[int]) -> bool:
    return bool(pids) and bool(await conn.fetchval(_IN_TRANSACTION, pids))


async def blocking(conn: asyncpg.Connection, pids: list[int]) -> bool:
    """Whether some other session waits for a lock one of `pids` holds."""
    return bool(pids) and bool(await conn.fetchval(_BLOCKED_BY, pids))
