"""Strict reading of one TOML table: every key typed, every unknown key an error that names it."""

import math
from typing import Any, NoReturn

from config.durations import parse_duration_ms
from config.errors import ConfigError

_MISSING: Any = object()
_INT64_MAX = 2**63 - 1


def describe(value: object) -> str:
    """Name a TOML value's type the way the file's author wrote it."""
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    name = names.get(type(value))
    if name is not None:
        return f"{name} ({value!r})"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__


class Table:
    """One table of the file; ``take`` checks a key, ``done`` rejects the keys nobody took."""

    def __init__(self, path: str, where: str, data: object) -> None:
        self.path = path
        self.where = where
        if not isinstance(data, dict):
            self.fail("", "a table", data)
        self._data: dict[str, Any] = data
        self._taken: set[str] = set()

    def fail(self, key: str, expected: str, got: object = _MISSING) -> NoReturn:
        """Raise a ConfigError naming file, table, key and expectation."""
        place = f"{self.where}.{key}" if key else self.where
        found = "it is missing" if got is _MISSING else f"got {describe(got)}"
        msg = f"{self.path}: [{place}]: expected {expected}; {found}"
        raise ConfigError(msg)

    def names(self) -> list[str]:
        """All keys of the table, marked as taken (for tables whose keys are names)."""
        self._taken.update(self._data)
        return list(self._data)

    def raw(self, key: str, default: object = _MISSING) -> Any:
        """Value of ``key`` unchecked, or ``default`` (missing key is an error without one)."""
        self._taken.add(key)
        if key in self._data:
            return self._data[key]
        if default is _MISSING:
            self.fail(key, "this key")
        return default

    def sub(self, key: str, *, required: bool = False) -> "Table":
        """The nested table ``key`` (an empty one when absent and not required)."""
        value = self.raw(key, _MISSING if required else {})
        return Table(self.path, f"{self.where}.{key}" if self.where else key, value)

    def number(self, key: str, default: object = _MISSING, *, minimum: float | None = None,
               maximum: float | None = None) -> Any:
        """A finite int or float (booleans are not numbers here), optionally bounded."""
        value = self.raw(key, default)
        if value is default and default is not _MISSING:
            return value
        bounds = _bounds(minimum, maximum)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            self.fail(key, f"a number{bounds}", value)
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            self.fail(key, f"a number{bounds}", value)
        return float(value)

    def integer(self, key: str, default: object = _MISSING, *, minimum: int = 0) -> Any:
        """An integer (not a boolean) of at least ``minimum`` that the engine's 64-bit arrays hold."""
        value = self.raw(key, default)
        if value is default and default is not _MISSING:
            return value
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.fail(key, f"an integer >= {minimum}", value)
        if value > _INT64_MAX:
            self.fail(key, f"an integer <= {_INT64_MAX} (2**63 - 1)", value)
        return value

    def string(self, key: str, default: object = _MISSING) -> Any:
        """A non-empty string."""
        value = self.raw(key, default)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, str) or not value:
            self.fail(key, "a non-empty string", value)
        return value

    def duration(self, key: str, default: str, *, positive: bool = True) -> int:
        """A duration string in whole milliseconds (``positive`` rejects zero)."""
        value = self.raw(key, default)
        expected = "a duration greater than zero" if positive else "a duration"
        expected += " such as '500ms', '10s', '5m', '24h' or '14d'"
        if not isinstance(value, str):
            self.fail(key, expected, value)
        try:
            ms = parse_duration_ms(value)
        except (ValueError, OverflowError):  # OverflowError: more digits than a float holds
            self.fail(key, expected, value)
        if ms > _INT64_MAX:
            self.fail(key, expected, value)
        if positive and ms <= 0:
            self.fail(key, expected, value)
        return ms

    def done(self, allowed_hint: str = "") -> None:
        """Reject keys that no ``take`` asked for: a typo must not be silently ignored."""
        unknown = sorted(set(self._data) - self._taken)
        if unknown:
            known = ", ".join(sorted(self._taken)) or "none"
            where = f"[{self.where}]" if self.where else "the top level"
            hint = allowed_hint or f"known keys: {known}"
            msg = f"{self.path}: {where}: unknown key {unknown[0]!r} ({hint})"
            raise ConfigError(msg)


def _bounds(minimum: float | None, maximum: float | None) -> str:
    if minimum is not None and maximum is not None:
        return f" in [{minimum:g}, {maximum:g}]"
    if minimum is not None:
        return f" >= {minimum:g}"
    if maximum is not None:
        return f" <= {maximum:g}"
    return ""
