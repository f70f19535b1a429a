"""Durations in the journey map are strings with a unit, so a reader never guesses seconds vs ms."""

import re

_UNIT_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")


def parse_duration_ms(text: str) -> int:
    """Return whole milliseconds for a string such as ``"14d"`` or ``"250ms"``.

    Raises ValueError with the accepted form when the text does not match, so the
    config loader can name the key.
    """
    match = _DURATION.match(text)
    if match is None:
        msg = f"expected a duration such as '500ms', '10s', '5m', '24h' or '14d', got {text!r}"
        raise ValueError(msg)
    number, unit = match.groups()
    return round(float(number) * _UNIT_MS[unit])


def format_duration_ms(ms: int) -> str:
    """Render milliseconds with the largest unit that divides them, for summaries."""
    for unit in ("d", "h", "m", "s"):
        size = _UNIT_MS[unit]
        if ms and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"
