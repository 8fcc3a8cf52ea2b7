"""The log: one SQLite file (WAL) written through sqlite-utils by one background thread.

The schema lives here only. Requests never wait on the disk: they put a record on a queue; the
writer thread drains it in batches (one insert per table per batch; rows are replaced by primary
key, so a retried batch never duplicates). A failing write is retried with backoff and counted;
records are never dropped: if the database still refuses them at shutdown they are appended to
`<db>.unwritten.jsonl` beside it.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from enum import StrEnum
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlite_utils

log = logging.getLogger(__name__)


class RequestStatus(StrEnum):
    """`requests.status`: how a request ended."""

    OK = "ok"
    DEGRADED = "degraded"  # answered, but the scorer failed: no scores
    ERROR = "error"  # no answer (upstream failure, client error after parsing, client gone)


class Arm(StrEnum):
    """`requests.arm`: which side of a rollout served the request."""

    BASE = "base"  # the incumbent (base weights at the model's best_of); every request without a rollout
    CANDIDATE = "candidate"  # the canary checkpoint
    SHADOW = "shadow"  # the canary answering an incumbent request in the background (never returned)
    PROMOTED = "promoted"  # the checkpoint after promotion


class CheckpointStatus(StrEnum):
    """`checkpoints.status`."""

    CANDIDATE = "candidate"  # published, may be rolled out
    REJECTED = "rejected"  # refused by the eval gate (no files)
    PROMOTED = "promoted"
    RETIRED = "retired"


class RolloutState(StrEnum):
    """`rollouts.state`."""

    CANARY = "canary"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"

REQUESTS_COLUMNS: dict[str, type] = {
    "id": str,
    "created_at": float,  # unix seconds
    "model": str,  # public model name
    "arm": str,  # rollout arm that served it ("base" without a rollout)
    "model_version": str,
    "endpoint": str,  # "chat" or "completion"
    "messages": str,  # JSON: chat messages, or the completion prompt as a string
    "prompt": str,  # the text scorers read (system + last user turn)
    "params": str,  # JSON: sampling and passthrough fields as sent upstream
    "best_of": int,  # N asked for
    "n": int,
    "n_generated": int,  # candidates actually generated (fewer under adaptive N or partial failure)
    "winner_index": int,
    "latency_ms": float,
    "upstream_ms": float,
    "scoring_ms": float,
    "prompt_tokens": int,
    "completion_tokens": int,  # all candidates together: the real generation cost
    "upstream_calls": int,
    "stream": int,
    "user": str,
    "status": str,  # ok | degraded | error
    "http_status": int,
    "error": str,
}
CANDIDATES_COLUMNS: dict[str, type] = {
    "request_id": str,
    "idx": int,  # generation order
    "text": str,
    "message": str,  # JSON assistant message (tool calls included) for chat
    "finish_reason": str,
    "tokens": int,
    "score": float,
    "won": int,  # 1 for the top-scored candidate
    "returned_rank": int,  # position among the choices returned to the client, else null
}
FEEDBACK_COLUMNS: dict[str, type] = {
    "request_id": str,
    "user": str,  # with request_id, the key: feedback is idempotent per (request, user)
    "created_at": float,
    "kind": str,  # preference | rating | pairwise
    "candidate_index": int,  # preference: the preferred candidate; rating: the served one; pairwise: chosen
    "rejected_index": int,  # pairwise only
    "rating": float,  # rating only, in [0, 1]
    "comment": str,
}
CHECKPOINTS_COLUMNS: dict[str, type] = {
    "id": str,
    "created_at": float,
    "model": str,  # the public model whose logs trained it
    "base_model": str,  # the weights it was fine-tuned from
    "method": str,
    "data_since": float,
    "data_until": float,
    "metrics": str,  # JSON: eval report, data counts, training metrics, the run's config
    "path": str,
    "status": str,  # candidate | rejected | promoted | retired
}
ROLLOUTS_COLUMNS: dict[str, type] = {
    "model": str,  # public model name: one rollout per model at a time
    "checkpoint_id": str,
    "adapter_path": str,
    "state": str,  # canary | promoted | rolled_back | failed
    "share": float,  # percent of traffic on the candidate arm
    "candidate_best_of": int,
    "incumbent_best_of": int,
    "started_at": float,
    "step_started_at": float,  # the policy's statistics count requests since this moment
    "updated_at": float,
}
LOCKS_COLUMNS: dict[str, type] = {"name": str, "host": str, "pid": int, "acquired_at": float}
ROLLOUT_EVENTS_COLUMNS: dict[str, type] = {
    "id": int,
    "created_at": float,
    "model": str,
    "event": str,
    "checkpoint_id": str,
    "share": float,
    "details": str,
}


def open_database(path: str | Path) -> sqlite_utils.Database:
    """A connection with the pragmas every user of the store wants (WAL, a busy timeout)."""
    db = sqlite_utils.Database(path)
    db.execute("PRAGMA busy_timeout = 10000")
    db.enable_wal()
    return db


def ensure_schema(db: sqlite_utils.Database) -> None:
    db["requests"].create(REQUESTS_COLUMNS, pk="id", if_not_exists=True)
    db["candidates"].create(
        CANDIDATES_COLUMNS, pk=("request_id", "idx"), foreign_keys=[("request_id", "requests", "id")],
        if_not_exists=True,
    )
    db["feedback"].create(FEEDBACK_COLUMNS, pk=("request_id", "user"), if_not_exists=True)
    db["checkpoints"].create(CHECKPOINTS_COLUMNS, pk="id", if_not_exists=True)
    db["rollout_events"].create(ROLLOUT_EVENTS_COLUMNS, pk="id", if_not_exists=True)
    db["rollouts"].create(ROLLOUTS_COLUMNS, pk="model", if_not_exists=True)
    db["locks"].create(LOCKS_COLUMNS, pk="name", if_not_exists=True)
    db["requests"].create_index(["model", "created_at"], if_not_exists=True)


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


@dataclass
class RequestLog:
    """Everything about one request: its `requests` row and its `candidates` rows."""

    request: dict[str, Any]
    candidates: list[dict[str, Any]] = field(default_factory=list)


_STOP = object()


class Store:
    """Owns the writer thread. `log()` is safe from any thread and never blocks on the disk."""

    def __init__(
        self,
        path: str | Path,
        *,
        batch_size: int = 256,
        flush_interval_s: float = 0.05,
        max_retries: int = 5,
        on_written: Callable[[int], None] | None = None,
        on_write_error: Callable[[], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.max_retries = max_retries
        self._on_written = on_written or (lambda count: None)
        self._on_write_error = on_write_error or (lambda: None)
        self._queue: queue.Queue[Any] = queue.Queue()
        self._pending: dict[str, tuple[int, int | None]] = {}  # queued, not yet written
        self._thread: threading.Thread | None = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        ensure_schema(open_database(self.path))

    def connect(self) -> sqlite_utils.Database:
        """A new connection for readers (tests, the distill job, `tao logs export`)."""
        return open_database(self.path)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="tao-store-writer", daemon=True)
        self._thread.start()

    def log(self, record: RequestLog) -> None:
        self._pending[record.request["id"]] = (len(record.candidates), record.request.get("winner_index"))
        self._queue.put(record)

    def candidates_of(self, request_id: str) -> tuple[int, int | None] | None:
        """(candidate count, winner index) of a logged request, queued or written; None if unknown."""
        if request_id in self._pending:
            return self._pending[request_id]
        db = self.connect()
        try:
            row = db.execute("SELECT (SELECT COUNT(*) FROM candidates WHERE request_id = r.id), r.winner_index "
                             "FROM requests r WHERE r.id = ?", [request_id]).fetchone()
        finally:
            db.close()
        return (row[0], row[1]) if row else None

    def record_feedback(self, row: dict[str, Any]) -> None:
        """Upsert one verdict (keyed by request and user). Rare and small: written directly."""
        db = self.connect()
        try:
            db["feedback"].insert(row, replace=True)
        finally:
            db.close()

    def queue_depth(self) -> int:
        return self._queue.qsize()

    def close(self, timeout_s: float = 30.0) -> None:
        """Write everything queued, then stop the writer."""
        if self._thread is None:
            return
        self._queue.put(_STOP)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.error("store writer did not finish within %.0f s", timeout_s)
        self._thread = None

    def _run(self) -> None:
        db = open_database(self.path)
        stopping = False
        while not stopping:
            batch: list[RequestLog] = []
            try:
                item = self._queue.get(timeout=self.flush_interval_s)
            except queue.Empty:
                continue
            while True:
                if item is _STOP:
                    stopping = True
                else:
                    batch.append(item)
                if len(batch) >= self.batch_size:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch and self._write_with_retries(db, batch, final=stopping):
                for record in batch:
                    self._pending.pop(record.request["id"], None)
            elif batch and not stopping:
                # Keep the batch and retry it with the next one (at shutdown it was spilled instead).
                for record in batch:
                    self._queue.put(record)
                time.sleep(min(2.0, self.flush_interval_s * 10))
        # Anything that arrived after the stop marker is written too.
        rest = []
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is not _STOP:
                rest.append(item)
        if rest:
            self._write_with_retries(db, rest, final=True)
        db.close()

    def _write_with_retries(self, db: sqlite_utils.Database, batch: list[RequestLog], *, final: bool) -> bool:
        delay = 0.05
        for attempt in range(self.max_retries + 1):
            try:
                self._write(db, batch)
                self._on_written(len(batch))
                return True
            except Exception as exc:  # noqa: BLE001 - any failure is retried, counted, never fatal
                self._on_write_error()
                log.warning("store write of %d records failed (attempt %d): %s", len(batch), attempt + 1, exc)
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
        if final:
            self._spill(batch)
        return False

    @staticmethod
    def _write(db: sqlite_utils.Database, batch: list[RequestLog]) -> None:
        # Candidates first: a reader that sees a request row always sees its candidates too.
        rows = [c for r in batch for c in r.candidates]
        if rows:
            db["candidates"].insert_all(rows, replace=True)
        db["requests"].insert_all((r.request for r in batch), replace=True)

    def _spill(self, batch: list[RequestLog]) -> None:
        spill = self.path.with_name(self.path.name + ".unwritten.jsonl")
        with spill.open("a") as f:
            for record in batch:
                f.write(json.dumps({"request": record.request, "candidates": record.candidates}) + "\n")
        log.error("database refused %d records; appended them to %s", len(batch), spill)
