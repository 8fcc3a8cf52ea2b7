"""Retention: delete old requests with their candidates and feedback, then give the space back.

`prune` is what `store.retention_days` applies in the writer (hourly) and what `tao logs prune`
runs. Checkpoints, rollouts and their events are kept: they are small, and a checkpoint's data
window stays meaningful as history even after its rows are gone.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import sqlite_utils


@dataclass(frozen=True)
class Pruned:
    requests: int
    candidates: int
    feedback: int


def prune(db: sqlite_utils.Database, before: float) -> Pruned:
    """Delete requests created before `before` (unix seconds), their candidates and feedback, in one
    transaction; then checkpoint the WAL so its file shrinks back (TRUNCATE)."""
    old = "SELECT id FROM requests WHERE created_at < ?"
    with db.conn:
        candidates = db.conn.execute(f"DELETE FROM candidates WHERE request_id IN ({old})", [before]).rowcount
        feedback = db.conn.execute(f"DELETE FROM feedback WHERE request_id IN ({old})", [before]).rowcount
        requests = db.conn.execute("DELETE FROM requests WHERE created_at < ?", [before]).rowcount
    checkpoint_wal(db)
    return Pruned(requests=requests, candidates=candidates, feedback=feedback)


def checkpoint_wal(db: sqlite_utils.Database) -> tuple[int, int, int]:
    """Copy the WAL into the database and truncate it to zero bytes where no reader still needs it.
    Returns SQLite's (busy, WAL pages, pages checkpointed)."""
    return db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()


def vacuum(db: sqlite_utils.Database) -> None:
    """Rewrite the database file without its free pages (needs as much free disk as the file)."""
    db.conn.execute("VACUUM")


def copy_database(source: str | Path, target: str | Path) -> None:
    """A consistent copy of the log at `source` (its WAL included) written to `target`, while the
    source stays in use: for an experiment on a copy (bench.flywheel goes on from a demo's log)."""
    with closing(sqlite3.connect(source)) as src, closing(sqlite3.connect(target)) as dst:
        src.backup(dst)
