"""Free local ports for processes a test starts (bridge peers listen on UDP)."""

from __future__ import annotations

import socket


def free_udp_ports(count: int) -> list[int]:
    """``count`` distinct free UDP ports on 127.0.0.1.

    Every socket stays bound until all are chosen, so two calls in one test cannot
    hand out the same port twice (one at a time, the OS may reuse a port just released).
    """
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
