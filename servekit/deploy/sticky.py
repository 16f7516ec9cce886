"""Sticky routing: weighted rendezvous (highest random weight) hashing.

The same key always lands on the same variant, across restarts and processes (hashlib, not
Python's salted ``hash``); changing one weight only moves the share of keys that must move.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping

_SCALE = float(2**64)


def unit_hash(*parts: str) -> float:
    """A stable number in (0, 1) for ``parts``."""
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") + 0.5) / _SCALE


def rendezvous(key: str, weights: Mapping[str, float]) -> str:
    """The variant ``key`` sticks to; each variant wins a share of keys equal to its weight."""
    best, best_score = "", -math.inf
    for name, weight in weights.items():
        if weight <= 0:
            continue
        score = -weight / math.log(unit_hash(key, name))
        if score > best_score:
            best, best_score = name, score
    return best
