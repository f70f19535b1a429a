"""Every ``run`` flag from the environment, pods as Bytewax names them, refused client settings."""

import argparse
from pathlib import Path

import pytest

from config.errors import ConfigError
from journey.cli import _parser
from journey.environment import pod_cluster, variables
from tests.broker_fixtures import journey_cli


def run_args(environ: dict[str, str], *argv: str) -> argparse.Namespace:
    return _parser(environ).parse_args(["run", *argv])


def run_parser() -> argparse.ArgumentParser:
    sub = next(a for a in _parser({})._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["run"]


def test_every_run_flag_has_a_variable_and_the_command_line_wins() -> None:
    names = variables(run_parser())
    assert {"JOURNEY_BROKERS", "JOURNEY_CONFIG", "JOURNEY_RECOVERY_DIR", "JOURNEY_UNTIL_END",
            "JOURNEY_METRICS_PORT", "JOURNEY_PROCESS_ID", "JOURNEY_ADDRESSES"} <= set(names)
    env = {"JOURNEY_BROKERS": "k:9092", "JOURNEY_WORKERS": "3", "JOURNEY_UNTIL_END": "true",
           "JOURNEY_RECOVERY_DIR": "/var/lib/journey", "JOURNEY_SNAPSHOT_INTERVAL": "2.5",
           "JOURNEY_NO_WINDOWS": "0"}
    args = run_args(env)
    assert (args.brokers, args.workers, args.until_end, args.recovery_dir, args.snapshot_interval,
            args.no_windows) == ("k:9092", 3, True, Path("/var/lib/journey"), 2.5, False)
    assert run_args(env, "--brokers", "other:1", "--workers", "1").brokers == "other:1"
    assert run_args({}).brokers is None and not run_args({}).until_end


@pytest.mark.parametrize(("environ", "said"), [
    ({"JOURNEY_WORKERS": "0"}, "JOURNEY_WORKERS='0': expected a whole number >= 1"),
    ({"JOURNEY_UNTIL_END": "perhaps"}, "JOURNEY_UNTIL_END='perhaps': expected one of"),
    ({"JOURNEY_METRICS_PORT": "http"}, "JOURNEY_METRICS_PORT='http'"),
])
def test_a_bad_variable_is_named(environ: dict[str, str], said: str) -> None:
    with pytest.raises(ConfigError, match=said):
        _parser(environ)
    done = journey_cli("run", env={"PATH": "/usr/bin:/bin", **environ}, timeout=60)
    assert done.returncode == 2 and said in done.stderr and "Traceback" not in done.stderr


def test_a_statefulset_pod_finds_its_process_id_and_peers(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("journey-0.journey:2101\njourney-1.journey:2101\n\n")
    pod = {"BYTEWAX_POD_NAME": "journey-1", "BYTEWAX_STATEFULSET_NAME": "journey",
           "BYTEWAX_HOSTFILE_PATH": str(hosts)}
    assert pod_cluster(None, None, pod) == (1, "journey-0.journey:2101;journey-1.journey:2101")
    assert pod_cluster(0, "a:1;b:1", pod) == (0, "a:1;b:1")  # flags and JOURNEY_* win
    assert pod_cluster(None, None, {}) == (None, None)
    with pytest.raises(ConfigError, match="ordinal"):
        pod_cluster(None, None, {**pod, "BYTEWAX_POD_NAME": "other-1"})


def test_client_settings_librdkafka_refuses_exit_2_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "sasl.toml"
    config.write_text(Path("config/journey.toml").read_text() + """
[kafka]
brokers = "127.0.0.1:1"
[kafka.properties]
"security.protocol" = "SASL_SSL"
"sasl.mechanism" = "SCRAM-SHA-999"
"sasl.username" = "journey"
[kafka.secrets]
"sasl.password" = "CANARY_PASSWORD"
""")
    canary = "canary-SCRAM-SHA-999-pw"  # contains the bad value: must still be hidden
    env = {"PATH": "/usr/bin:/bin", "CANARY_PASSWORD": canary}
    done = journey_cli("run", "--config", str(config), env=env, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "[kafka.properties] 'sasl.mechanism'" in done.stderr and "SCRAM-SHA-999" in done.stderr
    assert "Traceback" not in done.stderr and canary not in done.stderr + done.stdout
    config.write_text(config.read_text().replace('"sasl.mechanism" = "SCRAM-SHA-999"',
                                                 '"sasl.mechanism" = "PLAIN"\n"acks" = "maybe"'))
    done = journey_cli("run", "--config", str(config), env=env, timeout=60)
    assert done.returncode == 2 and "[kafka.properties] 'acks'" in done.stderr, done.stderr
