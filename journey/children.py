"""Processes this program starts (the embedded broker, a cluster's processes) end with it."""

import ctypes
import os
import signal
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1
# looked up now, not between fork and exec: loading a library there may deadlock on a lock
# another thread of the parent held at the fork
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None


def die_with_parent() -> Callable[[], None]:
    """A ``preexec_fn``: Linux sends the child SIGTERM when the process that started it ends.

    However the parent ends (SIGTERM, kill -9), no broker is left holding its port with
    old topics in it, and no cluster process runs on unsupervised. A parent that died
    before the child asked is noticed too. Elsewhere a no-op.
    """
    parent = os.getpid()

    def in_child() -> None:
        if _prctl is not None:
            _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
            if os.getppid() != parent:  # gone already: the signal will never come
                os.kill(os.getpid(), signal.SIGTERM)

    return in_child
