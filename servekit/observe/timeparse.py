"""Points in time as users type them: unix seconds, ISO 8601, or an age such as '15m' or '7d'."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from servekit.errors import InvalidInput

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(value: str, *, now: float | None = None) -> float:
    """Unix time of ``value``; an age ('15m', '2h', '7d') counts back from now."""
    text = value.strip()
    if text and text[-1] in _UNITS:
        try:
            age = float(text[:-1])
        except ValueError:
            pass
        else:
            return (time.time() if now is None else now) - age * _UNITS[text[-1]]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(
            f"cannot read {value!r} as a time: use unix seconds, ISO 8601 "
            "(2026-11-22T10:00:00Z) or an age such as 15m, 2h, 7d"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()
