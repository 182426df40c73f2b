"""Can a server of ours listen where its settings say? Asked before it starts, so a taken port is one line.

Called by `roomlogs worker` (its metrics and health endpoints) and `roomlogs api serve` before their
servers start: the servers' own errors for a taken port are a traceback (faust) or several log lines and
exit 3 (uvicorn).
"""

from __future__ import annotations

import socket

from pipeline.errors import ConfigurationError

__all__ = ["check_can_listen"]


def check_can_listen(host: str, port: int, *, host_setting: str, port_setting: str) -> None:
    """ConfigurationError naming the settings when `host`:`port` cannot be bound right now."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise ConfigurationError(f"{host_setting}={host!r} is not an address to listen on ({e})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do
        try:
            sock.bind(address)
        except OSError as e:
            raise ConfigurationError(
                f"cannot listen on {host}:{port} ({e.strerror}): another process has it, set {port_setting} "
                f"(or {host_setting}) to a free one"
            ) from None
