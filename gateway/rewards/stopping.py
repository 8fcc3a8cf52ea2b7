"""Scoring work that stops when nobody waits for it any more.

A scorer written as a plain function runs on a worker thread, so the event loop never runs it.
That alone is not enough: Python threads share one interpreter lock, `re` holds it for a whole
match, and a thread cannot be killed. So the engine's scorer timeout used to leave the work
running (a stuck request kept a core busy for minutes), and shutdown waited for it.

Here each call runs on a thread of its own with a stop flag. When the awaiting task is cancelled
(the engine's `reward.timeout_s`, a client that left, the server stopping), the flag is set, and
the work ends at its next `check_stopped()`: the instruction reader calls it before every pattern
it runs and the default scorer before every check, each bounded in size (`gateway.rewards.reading`),
so a stopped job leaves the CPU within milliseconds. The threads are daemons: a scorer that never
checks (a user's `python` scorer) cannot hold the process at exit either.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

_stop_flag: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar("scoring_stop_flag", default=None)


class ScoringStopped(Exception):
    """The scoring this thread was doing was given up; raised by `check_stopped`."""


def check_stopped() -> None:
    """Raise ScoringStopped if the caller of this work has given up on it. About 100 ns: call it
    in any loop whose length depends on the input."""
    flag = _stop_flag.get()
    if flag is not None and flag.is_set():
        raise ScoringStopped("scoring was stopped: its caller gave up (timeout, disconnect or shutdown)")


async def run_stoppable(fn: Callable[..., T], *args: object) -> T:
    """`fn(*args)` on a daemon thread of its own; cancelling the awaiting task tells the work to stop
    at its next `check_stopped()` and returns at once (the thread ends by itself)."""
    loop = asyncio.get_running_loop()
    result: asyncio.Future[T] = loop.create_future()
    flag = threading.Event()
    context = contextvars.copy_context()
    context.run(_stop_flag.set, flag)

    def settle(outcome: T | None, error: BaseException | None) -> None:
        if result.done():
            return
        if error is not None:
            result.set_exception(error)
        else:
            result.set_result(outcome)  # type: ignore[arg-type]

    def work() -> None:
        try:
            outcome = context.run(fn, *args)
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task, raised there
            error: BaseException | None = exc
            outcome = None
        else:
            error = None
        if not loop.is_closed():
            try:
                loop.call_soon_threadsafe(settle, outcome, error)
            except RuntimeError:  # the loop closed in between: nobody is waiting
                pass

    threading.Thread(target=work, name="scorer", daemon=True).start()
    try:
        return await result
    except asyncio.CancelledError:
        flag.set()
        raise
