"""``promtool``, which checks PromQL and runs rule tests offline: required, never skipped."""

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

Promtool = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="session")
def promtool() -> Promtool:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: install Debian's `prometheus` package (apt-get install prometheus)")

    def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([path, *map(str, args)], capture_output=True, text=True, timeout=120,
                              check=False)
        assert done.returncode == 0, f"promtool {' '.join(map(str, args))}:\n{done.stdout}{done.stderr}"
        return done

    return run
