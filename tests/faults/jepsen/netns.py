"""A real network cut: a worker in its own network namespace, joined to the host by a veth pair.

The brokers and PostgreSQL listen on 127.0.0.1 of the host. Inside the namespace 127.0.0.0/8 is routed
over the veth to the host (``route_localnet`` on both ends of that veth only; the namespace's own
loopback stays down), so the worker reaches them at the same addresses as everyone else, every packet
crossing the veth. The namespace has no other route: it can talk to the host's loopback services and
nothing else. PostgreSQL sees the worker's namespace address, so `allow_in_hba()` adds one `trust` line
for that /30 to the server's pg_hba.conf (removed by `close()`).

`cut()` sets the host end of the veth down: packets are dropped both ways, no RST reaches anyone (as a
pulled cable or a partition between racks), TCP connections stall until their timeouts. `heal()` sets it
up again. Needs root, iproute2 and a kernel that lets us create namespaces; `unsupported_reason()` says
why not when it cannot be done here.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import random
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

#: Names of everything this module creates start with this (interface names are at most 15 characters).
PREFIX = "rlj"
#: Where the /30 of each namespace is picked from.
_POOL = ipaddress.IPv4Network("10.231.0.0/16")


def _ip(*args: str, namespace: str | None = None) -> None:
    command = ["ip", *(["netns", "exec", namespace, "ip"] if namespace else []), *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise OSError(f"{' '.join(command)}: {done.stderr.strip() or done.stdout.strip()}")


def _route_localnet(interface: str, namespace: str | None = None) -> None:
    """Let `interface` carry 127.0.0.0/8 (for this interface only, not the whole host)."""
    path = f"/proc/sys/net/ipv4/conf/{interface}/route_localnet"
    if namespace is None:
        Path(path).write_text("1\n")
        return
    command = ["ip", "netns", "exec", namespace, "sh", "-c", f"echo 1 > {path}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise OSError(f"{' '.join(command)}: {done.stderr.strip()}")


def _addresses_in_use() -> list[ipaddress.IPv4Network]:
    done = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, timeout=30, check=False)
    networks = []
    for line in done.stdout.splitlines():
        parts = line.split()
        if "inet" in parts:
            networks.append(ipaddress.IPv4Interface(parts[parts.index("inet") + 1]).network)
    return networks


def _append(path: Path, line: str) -> None:
    with path.open("a") as f:
        f.write(line)


@dataclass
class Namespace:
    """One network namespace with a veth to the host. Made by `create()`; `close()` removes it all."""

    name: str
    host_if: str
    ns_if: str
    host_address: str
    ns_address: str
    subnet: str
    #: pg_hba.conf files we added a line to, and the line
    _hba: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def exec_prefix(self) -> list[str]:
        """Prefix a command with this to run it inside the namespace (`ip netns exec` execs it: same pid)."""
        return ["ip", "netns", "exec", self.name]

    def cut(self) -> None:
        """Drop every packet between the namespace and the host, both ways."""
        _ip("link", "set", self.host_if, "down")

    def heal(self) -> None:
        _ip("link", "set", self.host_if, "up")

    async def allow_in_hba(self, dsn: str) -> None:
        """Let the namespace's address connect to the PostgreSQL at `dsn` (trust, as 127.0.0.1 does):
        one line in its pg_hba.conf, then a reload. That server must run on this machine."""
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            hba = Path(await conn.fetchval("SHOW hba_file"))
            line = f"host all all {self.subnet} trust  # {self.name}, removed when the harness ends\n"
            await asyncio.to_thread(_append, hba, line)
            self._hba.append((hba, line))
            await conn.execute("SELECT pg_reload_conf()")
        finally:
            await conn.close()

    async def aclose(self, dsn: str) -> None:
        """`close()`, then have PostgreSQL re-read its pg_hba.conf (if it is up)."""
        edited = bool(self._hba)
        self.close()
        if edited:
            with contextlib.suppress(OSError, asyncpg.PostgresError):
                conn = await asyncpg.connect(dsn, timeout=10)
                try:
                    await conn.execute("SELECT pg_reload_conf()")
                finally:
                    await conn.close()

    def close(self) -> None:
        """Remove the pg_hba.conf lines (effective at the next reload), the veth and the namespace."""
        for hba, line in self._hba:
            with contextlib.suppress(OSError):
                hba.write_text(hba.read_text().replace(line, ""))
        self._hba.clear()
        with contextlib.suppress(OSError):
            _ip("link", "del", self.host_if)  # takes the namespace's end with it
        with contextlib.suppress(OSError):
            _ip("netns", "del", self.name)


def create(seed: int) -> Namespace:
    """A namespace with a veth to the host on a free /30 of 10.231.0.0/16, routes as the module says."""
    remove_stale()
    rng = random.Random(f"{seed}/{os.getpid()}")
    tag = f"{os.getpid()}x{rng.randrange(100):02d}"  # at most 10 characters: interface names take 15
    in_use = _addresses_in_use()
    subnets = list(_POOL.subnets(new_prefix=30))
    while True:
        subnet = rng.choice(subnets)
        if not any(subnet.overlaps(other) for other in in_use):
            break
    host, inside = (str(a) for a in list(subnet.hosts())[:2])
    ns = Namespace(f"{PREFIX}-{tag}", f"{PREFIX}{tag}h", f"{PREFIX}{tag}n", host, inside, str(subnet))
    try:
        _ip("netns", "add", ns.name)
        _ip("link", "add", ns.host_if, "type", "veth", "peer", "name", ns.ns_if)
        _ip("link", "set", ns.ns_if, "netns", ns.name)
        _ip("addr", "add", f"{host}/30", "dev", ns.host_if)
        _route_localnet(ns.host_if)
        _ip("link", "set", ns.host_if, "up")
        _ip("addr", "add", f"{inside}/30", "dev", ns.ns_if, namespace=ns.name)
        _route_localnet(ns.ns_if, ns.name)
        _ip("link", "set", ns.ns_if, "up", namespace=ns.name)
        _ip("route", "add", "127.0.0.0/8", "via", host, "dev", ns.ns_if, "src", inside, namespace=ns.name)
    except BaseException:
        ns.close()
        raise
    return ns


def remove_stale() -> None:
    """Remove the namespaces (and their veths) of harness runs whose process is gone (killed mid-run)."""
    done = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=30, check=False)
    for line in done.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        match = re.fullmatch(rf"{PREFIX}-(\d+)x\d\d", name)
        if match is None or Path(f"/proc/{match.group(1)}").exists():
            continue
        tag = name.removeprefix(f"{PREFIX}-")
        for command in (["link", "del", f"{PREFIX}{tag}h"], ["netns", "del", name]):
            with contextlib.suppress(OSError):
                _ip(*command)


def unsupported_reason() -> str | None:
    """None when a namespace can be made and used here, else why not (in words for the report)."""
    if os.name != "posix" or not hasattr(os, "geteuid"):
        return "network namespaces are a Linux feature"
    if os.geteuid() != 0:
        return "making network namespaces needs root (this run is not)"
    if shutil.which("ip") is None:
        return "iproute2 (`ip`) is not installed"
    if not Path("/proc/sys/net/ipv4/conf/all/route_localnet").exists():
        return "the kernel has no route_localnet (needed to reach 127.0.0.1 over a veth)"
    try:
        ns = create(seed=0)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"could not make a network namespace with a veth pair: {exc}"
    ns.close()
    return None
