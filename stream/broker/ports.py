"""Loopback TCP ports: is one free, find a free one, does something listen on one.

``free_port`` is the project's one way to pick a port: the broker's controller listener,
tests that need a broker or an endpoint of their own, and the demo's metrics endpoint.

>>> port = free_port()
>>> 0 < port < 65536 and port_free(port)
True
>>> free_port(preferred=port) == port
True
"""

from __future__ import annotations

import socket

from stream.broker.defaults import LOOPBACK


def port_free(port: int, host: str = LOOPBACK) -> bool:
    """True when ``port`` on ``host`` can be bound now (a port in TIME_WAIT counts as free)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Kafka binds with SO_REUSEADDR too, so a port in TIME_WAIT counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = LOOPBACK, *, preferred: int | None = None) -> int:
    """A TCP port nothing listens on right now: ``preferred`` if it is free, else any.

    Nothing holds the port once this returns, so whoever binds it next should do so soon.
    """
    if preferred and port_free(preferred, host):
        return preferred
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port


def tcp_open(host: str, port: int) -> bool:
    """True when something accepts a TCP connection at ``host:port`` within a second."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False
