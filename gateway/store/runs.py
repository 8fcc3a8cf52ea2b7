"""Distill runs and how each ended: the record an operator's dashboard counts.

A run that found too little data, was rejected by the gate or found the lock held is an answer,
not a crash; counting outcomes here (and exporting them as `tao_distill_runs`) lets a dashboard
tell them from real failures, whatever the orchestrator makes of exit codes.
"""

from __future__ import annotations

import time

import sqlite_utils


def record_distill_run(db: sqlite_utils.Database, outcome: str, exit_code: int, message: str,
                       started_at: float) -> None:
    db["distill_runs"].insert({"started_at": started_at, "finished_at": time.time(), "outcome": outcome,
                               "exit_code": exit_code, "message": message[:2000]})


def distill_run_counts(db: sqlite_utils.Database) -> dict[str, int]:
    """Runs per outcome, since the log began."""
    if not db["distill_runs"].exists():
        return {}
    return dict(db.execute("SELECT outcome, COUNT(*) FROM distill_runs GROUP BY outcome").fetchall())
