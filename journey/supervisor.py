"""``journey run --processes N``: a Bytewax cluster on this machine, restarted whole when a process dies.

Bytewax's cluster cannot lose a process: the others panic and stop. So when any
process ends badly, every process is stopped and all of them start again from the
recovery store, which resumes them at their last common snapshot: nothing is lost,
and what is produced again is what the at-least-once contract allows. Restarts back
off (1 s doubling to 30 s; a cluster that ran a minute starts again at 1 s). A
configuration error (exit 2) is not retried: it would fail again.

Each process is ``journey run`` with the same flags, told its place by
``JOURNEY_PROCESS_ID`` and ``JOURNEY_ADDRESSES`` (loopback ports chosen at each start).
The processes run in their own session: Ctrl-C reaches the supervisor, which passes
one SIGTERM to each (a graceful stop) and waits for them; a second signal is passed on
too (each process then stops at once, flushing what it produced).
"""

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from config.errors import ClusterError, ConfigError
from journey.broker import free_port
from journey.children import die_with_parent

log = logging.getLogger(__name__)

FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0
STABLE_S = 60.0
"""A cluster that ran this long before a process died restarts after the first backoff again."""
STOP_GRACE_S = 60.0
"""How long stopped processes get to deliver their output before they are killed."""
NOT_RETRIED = frozenset({ConfigError.exit_code})
"""Exit codes that a restart would only repeat: configuration errors."""
TICK_S = 0.1
"""How often the supervisor looks at its processes and at a stop request."""


@dataclass(frozen=True)
class Death:
    """The first process of a cluster that ended badly."""

    process: int
    returncode: int

    def describe(self) -> str:
        """``process 1 was killed by SIGKILL`` or ``process 0 exited with code 4``."""
        if self.returncode < 0:
            return f"process {self.process} was killed by {signal.Signals(-self.returncode).name}"
        return f"process {self.process} exited with code {self.returncode}"


def backoff_s(restarts: int) -> float:
    """The wait before restart number ``restarts`` (1, 2, ...) of a cluster that keeps failing."""
    return float(min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2 ** (restarts - 1)))


def child_argv(argv: Sequence[str]) -> list[str]:
    """The command line of one process: this one's, without ``--processes``."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--processes":
            skip = True
        elif not arg.startswith("--processes="):
            out.append(arg)
    return [sys.executable, "-P", "-m", "journey.cli", *out]


def exit_status(returncode: int) -> int:
    """A child's return code as a shell reports it: killed by signal N is 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


class Supervisor:
    """Starts the processes, watches them, restarts them all, passes a stop on.

    The signal handler only counts signals; the loop, which looks every ``TICK_S``, acts
    on them (a handler that took a lock the interrupted loop held would hang).
    """

    def __init__(self, processes: int, argv: Sequence[str], environ: Mapping[str, str]) -> None:
        self.processes = processes
        self.argv = child_argv(argv)
        self.environ = {k: v for k, v in environ.items() if k != "JOURNEY_PROCESSES"}
        self.signals = 0  # stop requests received
        self.passed_on = 0  # stop requests passed on to the processes
        self.restarts = 0

    def run(self) -> int:
        """Supervise until every process finished (0), a stop, or an error not worth retrying."""
        failures = 0
        while True:
            started = time.monotonic()
            procs = self._start()
            death = self._watch(procs)
            if death is None:
                return self._finish(procs)
            self._kill(procs)
            if death.returncode in NOT_RETRIED:
                log.error("%s (a configuration error): not restarting", death.describe())
                return death.returncode
            failures = 1 if time.monotonic() - started >= STABLE_S else failures + 1
            wait = backoff_s(failures)
            self.restarts += 1
            log.warning("%s; restarting all %d processes from the recovery store in %g s (restart %d)",
                        death.describe(), self.processes, wait, self.restarts)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if self.signals:
                    return 0  # stopped while none runs: nothing to deliver
                time.sleep(TICK_S)

    def _start(self) -> list[subprocess.Popen[bytes]]:
        first = free_port(count=self.processes)
        addresses = ";".join(f"127.0.0.1:{first + i}" for i in range(self.processes))
        procs = []
        for i in range(self.processes):
            env = {**self.environ, "JOURNEY_PROCESS_ID": str(i), "JOURNEY_ADDRESSES": addresses}
            procs.append(subprocess.Popen(self.argv, env=env, start_new_session=True,
                                          preexec_fn=die_with_parent()))
        log.info("started %d processes (pids %s) on %s", self.processes,
                 ", ".join(str(p.pid) for p in procs), addresses)
        return procs

    def _watch(self, procs: list[subprocess.Popen[bytes]]) -> Death | None:
        """The first process to end badly; None once all ended well, or on a stop."""
        while not self.signals:
            codes = [p.poll() for p in procs]
            bad = [Death(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
            if bad:  # the cause first: not a process that only lost its peers
                return min(bad, key=lambda d: d.returncode == ClusterError.exit_code)
            if all(c == 0 for c in codes):
                return None
            time.sleep(TICK_S)
        return None

    def _finish(self, procs: list[subprocess.Popen[bytes]]) -> int:
        """All ended, or a stop: pass each stop request on, wait; the worst exit status.

        A process that the passed-on SIGTERM found still starting ends by it, before
        it read anything: that is a clean stop too.
        """
        deadline = time.monotonic() + STOP_GRACE_S
        while any(p.poll() is None for p in procs):
            while self.passed_on < self.signals:
                self.passed_on += 1
                log.info("stopping the %d processes%s", self.processes,
                         " at once" if self.passed_on > 1 else " (each delivers its output first; "
                         "again to stop at once)")
                for p in procs:
                    if p.poll() is None:
                        p.send_signal(signal.SIGTERM)
            if time.monotonic() >= deadline:
                log.warning("processes did not stop within %g s: killing them", STOP_GRACE_S)
                self._kill(procs)
            time.sleep(TICK_S)
        stopped = -signal.SIGTERM if self.signals else None
        codes = [0 if p.returncode == stopped else exit_status(p.returncode) for p in procs]
        return max(codes)

    @staticmethod
    def _kill(procs: list[subprocess.Popen[bytes]]) -> None:
        """Kill what still runs (the others of a cluster that lost a process cannot go on)."""
        for p in procs:
            if p.poll() is None:
                p.kill()
        for p in procs:
            p.wait()

    def stop(self, signum: int, _frame: object) -> None:
        """Signal handler: count the request; the loop passes it on."""
        self.signals += 1


def supervise(processes: int, argv: Sequence[str]) -> int:
    """Run the supervised cluster in this process until it finishes or is stopped."""
    supervisor = Supervisor(processes, argv, os.environ)
    previous = {sig: signal.signal(sig, supervisor.stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return supervisor.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
