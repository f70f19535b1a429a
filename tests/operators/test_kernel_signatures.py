"""Kernels take named bundles, not long positional lists (two swapped arrays would run silently)."""

import inspect

from numba.core.registry import CPUDispatcher

from operators.shard import KERNEL_MODULES

KERNELS = {f"{m.__name__}.{name}": f for m in KERNEL_MODULES
           for name, f in vars(m).items() if isinstance(f, CPUDispatcher)}


def test_no_kernel_takes_more_than_twelve_parameters() -> None:
    counts = {name: len(inspect.signature(f.py_func).parameters) for name, f in KERNELS.items()}
    assert len(counts) > 15
    assert {name: n for name, n in counts.items() if n > 12} == {}
