"""Processes this program starts (the embedded broker, a cluster's processes) end with it."""

import ctypes
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Run in a child before exec: Linux sends it SIGTERM when the process that started it ends.

    However the parent ends (SIGTERM, kill -9), no broker is left holding its port with
    old topics in it, and no cluster process runs on unsupervised. Elsewhere a no-op.
    """
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
