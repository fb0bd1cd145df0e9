"""A NATS-protocol health probe: connect over TCP and read the server's INFO line.

A NATS server greets every client with ``INFO {json}\\r\\n`` before anything else, so one
connect and one read prove that a NATS server (not just any process) holds the port, and
tell its version and whether JetStream is on. On loopback this takes a few milliseconds
and the server logs nothing for it.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Final

__all__ = ["probe_info"]

_MAX_INFO: Final = 64 * 1024


def probe_info(host: str, port: int, timeout: float = 1.0) -> dict[str, object] | None:
    """Read the INFO a NATS server sends on connect.

    Args:
        host: Server address.
        port: Client port.
        timeout: Seconds allowed for connecting and reading, together.

    Returns:
        The decoded INFO object, or ``None`` when nothing NATS-like answered in time.
    """
    deadline = time.monotonic() + timeout
    buf = b""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            while b"\r\n" not in buf and len(buf) < _MAX_INFO:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                sock.settimeout(left)
                chunk = sock.recv(4096)
                if not chunk:
                    return None
                buf += chunk
    except OSError:  # refused, reset, timed out (socket.timeout is an OSError)
        return None
    line = buf.split(b"\r\n", 1)[0]
    if not line.startswith(b"INFO "):
        return None
    try:
        info = json.loads(line[5:])
    except ValueError:
        return None
    return info if isinstance(info, dict) else None
