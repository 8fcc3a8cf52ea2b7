"""Named locks kept in the store, so that one distill run at a time works on a database."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

import sqlite_utils


class LockHeld(RuntimeError):
    """Another live process holds the named lock."""


@contextmanager
def exclusive(db: sqlite_utils.Database, name: str) -> Iterator[None]:
    """Hold the named lock in the store for the duration (e.g. one distill run per database).

    A lock left by a process that died on this host is taken over; one held by a live process,
    or by another host, raises LockHeld.
    """
    host, pid = socket.gethostname(), os.getpid()
    conn = db.conn
    conn.execute("BEGIN IMMEDIATE")
    try:
        row = conn.execute("SELECT host, pid, acquired_at FROM locks WHERE name = ?", [name]).fetchone()
        if row is not None and not (row[0] == host and not _alive(row[1])):
            raise LockHeld(f"{name} is held by pid {row[1]} on {row[0]} since {time.ctime(row[2])}")
        conn.execute("INSERT OR REPLACE INTO locks (name, host, pid, acquired_at) VALUES (?, ?, ?, ?)",
                     [name, host, pid, time.time()])
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    try:
        yield
    finally:
        with conn:
            conn.execute("DELETE FROM locks WHERE name = ? AND host = ? AND pid = ?", [name, host, pid])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
