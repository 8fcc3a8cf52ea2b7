"""The one way tests wait: poll a real signal until it holds, or fail saying what never happened."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(condition: Callable[[], T], what: str | Callable[[], str], timeout_s: float = 30.0,
               interval_s: float = 0.02) -> T:
    """`condition()`'s first truthy value, polled every `interval_s`; fails with `what` (a message, or
    a function that writes one from the state at the deadline) after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        if time.monotonic() >= deadline:
            raise AssertionError(what() if callable(what) else what)
        time.sleep(interval_s)
    return value
