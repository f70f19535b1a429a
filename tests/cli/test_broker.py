"""Ports for a cluster on one host: consecutive, free, and out of the way of outgoing connections."""

import random
import socket

import pytest

from journey.broker import ephemeral_start, free_port


def test_free_ports_are_consecutive_free_and_below_the_ephemeral_range() -> None:
    for count in (1, 3):
        first = free_port(count=count)
        assert first >= 1_024 and first + count <= ephemeral_start()  # no outgoing connection takes one
        socks = [socket.socket() for _ in range(count)]
        try:
            for i, sock in enumerate(socks):
                sock.bind(("127.0.0.1", first + i))  # each of them free: binding raises otherwise
        finally:
            for sock in socks:
                sock.close()


def test_ports_taken_are_passed_over(monkeypatch: pytest.MonkeyPatch) -> None:
    first = free_port(count=3)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", first + 2))  # the last of the three
        taken.listen()
        picks = iter([first, first + 3])  # the taken run first, then the one after it
        monkeypatch.setattr(random.Random, "randrange", lambda *_: next(picks))
        assert free_port(count=3) == first + 3
