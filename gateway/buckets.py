"""Stable buckets: a string's fixed position in [0, 1), the same on every run and machine.

The rollout routes a user (or key) to an arm by it, and the distill dataset holds a prompt out by
it, so that neither moves between runs: a user stays on one arm, a held-out prompt is never
trained on later.
"""

from __future__ import annotations

import hashlib


def stable_fraction(key: str) -> float:
    """The first 32 bits of sha256(key) as a fraction in [0, 1)."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 0x100000000
