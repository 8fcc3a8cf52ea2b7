"""Named locks kept in the store, as leases: one distill run at a time works on a database, and one
gateway at a time decides rollouts (`hold_lease`, called in a loop: take it when free, renew it).

A lock is a row with an expiry. The run that holds it renews the lease from a background thread
(every third of the TTL); a run that dies without releasing it (SIGKILL, OOM, a lost node) stops
renewing, and the next run takes the lock once the lease has expired. Nothing depends on process
ids, which in a container say nothing: a restarted container's job is PID 1 again, alive.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gateway.store.schema import connection

log = logging.getLogger(__name__)


class LockHeld(RuntimeError):
    """Another run holds the named lock and its lease has not expired."""


@contextmanager
def exclusive(path: str | Path, name: str, ttl_s: float = 120.0) -> Iterator[None]:
    """Hold the named lock in the store at `path` for the duration, renewing its lease; raises
    LockHeld if another holder's lease is still running."""
    holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    with connection(path) as db:
        conn = db.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            now = time.time()
            row = conn.execute("SELECT holder, host, pid, acquired_at, expires_at FROM locks WHERE name = ?",
                               [name]).fetchone()
            if row is not None:
                expires = row[4] if row[4] is not None else row[3] + ttl_s
                if expires > now:
                    raise LockHeld(f"{name} is held by {row[0] or f'pid {row[2]} on {row[1]}'} since "
                                   f"{time.ctime(row[3])}; its lease runs until {time.ctime(expires)}")
                log.warning("taking over lock %s: the lease of %s expired at %s", name, row[0] or row[2],
                            time.ctime(expires))
            conn.execute("INSERT OR REPLACE INTO locks (name, host, pid, acquired_at, holder, expires_at) "
                         "VALUES (?, ?, ?, ?, ?, ?)", [name, socket.gethostname(), os.getpid(), now, holder, now + ttl_s])
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    stop = threading.Event()
    renewer = threading.Thread(target=_renew, args=(path, name, holder, ttl_s, stop), daemon=True,
                               name=f"lease-{name}")
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join()
        with connection(path) as db, db.conn:
            db.conn.execute("DELETE FROM locks WHERE name = ? AND holder = ?", [name, holder])


def _renew(path: str | Path, name: str, holder: str, ttl_s: float, stop: threading.Event) -> None:
    while not stop.wait(ttl_s / 3):
        try:
            with connection(path) as db, db.conn:
                renewed = db.conn.execute("UPDATE locks SET expires_at = ? WHERE name = ? AND holder = ?",
                                          [time.time() + ttl_s, name, holder]).rowcount
        except Exception as exc:  # noqa: BLE001 - a busy database now is retried at the next renewal
            log.warning("renewing lock %s failed: %s", name, exc)
            continue
        if not renewed:
            log.error("lost lock %s: another run took it after the lease expired", name)
            return


def hold_lease(path: str | Path, name: str, holder: str, ttl_s: float) -> bool:
    """One step of a leader election: take the named lease if it is free or its holder's has expired,
    renew it if `holder` has it; whether `holder` holds it now. Called more often than `ttl_s`, the
    holder keeps it; when the holder dies, another takes it within `ttl_s`."""
    with connection(path) as db:
        conn = db.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            now = time.time()
            row = conn.execute("SELECT holder, expires_at, acquired_at FROM locks WHERE name = ?", [name]).fetchone()
            if row is not None and row[0] != holder and (row[1] or 0) > now:
                conn.execute("ROLLBACK")
                return False
            if row is not None and row[0] != holder:
                log.warning("taking over lease %s: %s let it expire at %s", name, row[0], time.ctime(row[1] or 0))
            acquired = row[2] if row is not None and row[0] == holder else now
            conn.execute("INSERT OR REPLACE INTO locks (name, host, pid, acquired_at, holder, expires_at) "
                         "VALUES (?, ?, ?, ?, ?, ?)", [name, socket.gethostname(), os.getpid(), acquired, holder,
                                                       now + ttl_s])
            conn.execute("COMMIT")
            return True
        except BaseException:
            conn.execute("ROLLBACK")
            raise


def release_lease(path: str | Path, name: str, holder: str) -> None:
    """Give the lease up (a clean stop): another holder takes it at its next step, not after the TTL."""
    with connection(path) as db, db.conn:
        db.conn.execute("DELETE FROM locks WHERE name = ? AND holder = ?", [name, holder])
