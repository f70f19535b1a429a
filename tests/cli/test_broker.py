"""Ports for a cluster on one host: consecutive, free, and out of the way of outgoing connections."""

import socket
from pathlib import Path

from journey.broker import free_port

EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")


def test_free_ports_are_consecutive_free_and_below_the_ephemeral_range() -> None:
    low = int(EPHEMERAL.read_text().split()[0])
    for count in (1, 3):
        first = free_port(count=count)
        assert first >= 1_024 and first + count <= low  # no outgoing connection is given one of them
        socks = [socket.socket() for _ in range(count)]
        try:
            for i, sock in enumerate(socks):
                sock.bind(("127.0.0.1", first + i))  # each of them free: binding raises otherwise
                sock.listen()
            assert free_port(count=count) != first  # taken now: another is found
        finally:
            for sock in socks:
                sock.close()
