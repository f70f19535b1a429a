"""Settings from the environment: every ``run`` flag as ``JOURNEY_<FLAG>``, and Bytewax's pod conventions.

A container is configured by its environment more easily than by its command line:
``--brokers`` is also ``JOURNEY_BROKERS``, ``--until-end`` is ``JOURNEY_UNTIL_END=1``.
A flag given on the command line wins over its variable. The names are derived from
the flags, so the two cannot drift apart.
"""

import argparse
from collections.abc import Mapping
from pathlib import Path

from config.errors import ConfigError

PREFIX = "JOURNEY_"
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


def variable(action: argparse.Action) -> str:
    """``--process-id`` -> ``JOURNEY_PROCESS_ID``."""
    flag = max(action.option_strings, key=len)
    return PREFIX + flag.lstrip("-").replace("-", "_").upper()


def settable(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The parser's options that a variable can set (all but ``--help``)."""
    return [a for a in parser._actions  # argparse lists its options only there
            if a.option_strings and a.dest != "help"]


def variables(parser: argparse.ArgumentParser) -> list[str]:
    """Every variable that sets one of ``parser``'s options."""
    return [variable(a) for a in settable(parser)]


def apply_environment(parser: argparse.ArgumentParser, environ: Mapping[str, str]) -> None:
    """Make each set ``JOURNEY_<FLAG>`` the default of its flag; a bad value names the variable."""
    for action in settable(parser):
        name = variable(action)
        if name not in environ:
            continue
        text = environ[name]
        if action.nargs == 0:  # a switch (store_true)
            if text.lower() not in _TRUE + _FALSE:
                msg = f"{name}={text!r}: expected one of {', '.join(_TRUE)} or {', '.join(_FALSE[:-1])}"
                raise ConfigError(msg)
            action.default = text.lower() in _TRUE
            continue
        convert = action.type if callable(action.type) else str
        try:
            action.default = convert(text)
        except (ValueError, argparse.ArgumentTypeError) as err:
            msg = f"{name}={text!r}: {err} (it sets {max(action.option_strings, key=len)})"
            raise ConfigError(msg) from err
        action.required = False


def pod_cluster(process_id: int | None, addresses: str | None,
                environ: Mapping[str, str]) -> tuple[int | None, str | None]:
    """Process id and addresses completed from a StatefulSet pod, as ``python -m bytewax.run`` does.

    ``BYTEWAX_POD_NAME`` minus ``BYTEWAX_STATEFULSET_NAME-`` is the pod's ordinal, its
    process id; ``BYTEWAX_HOSTFILE_PATH`` names a file with one ``host:port`` per line, in
    process order. Given flags or ``JOURNEY_*`` variables win.
    """
    pod, statefulset = environ.get("BYTEWAX_POD_NAME"), environ.get("BYTEWAX_STATEFULSET_NAME")
    if process_id is None and pod and statefulset:
        ordinal = pod.removeprefix(statefulset + "-")
        if not ordinal.isdigit():
            msg = (f"BYTEWAX_POD_NAME={pod!r} is not BYTEWAX_STATEFULSET_NAME={statefulset!r} "
                   "followed by '-' and the pod's ordinal: set BYTEWAX_STATEFULSET_NAME to the "
                   "StatefulSet's name, or give JOURNEY_PROCESS_ID")
            raise ConfigError(msg)
        process_id = int(ordinal)
    hostfile = environ.get("BYTEWAX_HOSTFILE_PATH")
    if process_id is not None and addresses is None and hostfile:
        try:
            lines = Path(hostfile).read_text().splitlines()
        except OSError as err:
            msg = (f"BYTEWAX_HOSTFILE_PATH={hostfile}: cannot read it ({err.strerror}); mount the "
                   "hostfile there (one host:port per process, in process order) or give JOURNEY_ADDRESSES")
            raise ConfigError(msg) from err
        addresses = ";".join(line.strip() for line in lines if line.strip())
    return process_id, addresses
