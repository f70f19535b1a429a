"""``journey run --processes N``: what it refuses, how it backs off, what it does not retry."""

import re
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from config.model import Settings
from journey.broker import ephemeral_start, free_port
from journey.simulate import SimOptions, messages, produce
from journey.supervisor import MAX_BACKOFF_S, Death, backoff_s, child_argv, exit_status
from tests.broker_fixtures import journey_cli, read_topic, write_config


def test_backoff_doubles_to_a_ceiling() -> None:
    waits = [backoff_s(n) for n in range(1, 9)]
    assert waits[:5] == [1, 2, 4, 8, 16] and waits[5:] == [MAX_BACKOFF_S] * 3


def test_each_process_runs_the_same_command_without_processes() -> None:
    argv = ["-v", "run", "--processes", "3", "--config", "m.toml", "--processes=3", "--until-end"]
    assert child_argv(argv) == [sys.executable, "-P", "-m", "journey.cli",
                                "-v", "run", "--config", "m.toml", "--until-end"]
    assert Death(1, -9).describe() == "process 1 was killed by SIGKILL"
    assert Death(0, 4).describe() == "process 0 exited with code 4"
    assert (exit_status(-9), exit_status(-15), exit_status(4)) == (137, 143, 4)  # as a shell says


@pytest.mark.parametrize(("extra", "said"), [
    (["--process-id", "0", "--addresses", "a:1"], "leave out --process-id and --addresses"),
    ([], "give --recovery-dir"),
])
def test_processes_refuses_what_it_decides_itself(extra: list[str], said: str) -> None:
    done = journey_cli("run", "--processes", "2", "--brokers", "127.0.0.1:1", *extra, timeout=60)
    assert done.returncode == 2 and said in done.stderr, done.stderr


def test_a_process_failing_on_configuration_is_not_restarted(
        make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    settings = make_settings()
    produce(settings, messages(settings, SimOptions(customers=20, events=200, seed=8)), progress=None)
    config = write_config(settings, tmp_path / "map.toml")
    port = free_port(count=2)
    with socket.socket() as taken:  # process 1 serves metrics on port + 1: taken
        taken.bind(("127.0.0.1", port + 1))
        taken.listen()
        done = journey_cli("run", "--config", str(config), "--processes", "2", "--until-end",
                           "--recovery-dir", str(tmp_path / "store"), "--metrics-port", str(port),
                           timeout=120)
    assert done.returncode == 2, done.stderr[-3000:]
    assert f"cannot serve metrics on 127.0.0.1:{port + 1}" in done.stderr
    assert "process 1 exited with code 2 (a configuration error): not restarting" in done.stderr
    assert done.stderr.count("started 2 processes") == 1 and "Traceback" not in done.stderr
    started = re.search(r"started 2 processes \(pids [\d, ]+\) on (\S+)", done.stderr)
    assert started is not None
    cluster = [int(address.rpartition(":")[2]) for address in started[1].split(";")]
    assert cluster[1] == cluster[0] + 1 and cluster[1] < ephemeral_start()  # no outgoing connection takes one
    assert not read_topic(settings, settings.topics.scores)
