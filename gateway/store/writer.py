"""The background writer: requests never wait on the disk.

They put a record on a queue; one thread drains it in batches (one insert per table per batch;
rows are replaced by primary key, so a retried batch never duplicates). A failing write is retried
with backoff and counted; records are never dropped: if the database still refuses them at
shutdown they are appended to `<db>.unwritten.jsonl` beside it.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlite_utils

from gateway.store.reads import candidate_count_and_winner
from gateway.store.schema import connection, ensure_schema, open_database

log = logging.getLogger(__name__)


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
        with self.connection() as db:
            ensure_schema(db)

    def connection(self) -> AbstractContextManager[sqlite_utils.Database]:
        """A connection for one unit of work (readers, the rollout, the distill job), closed when the
        `with` block ends."""
        return connection(self.path)

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
        with self.connection() as db:
            return candidate_count_and_winner(db, request_id)

    def record_feedback(self, row: dict[str, Any]) -> None:
        """Upsert one verdict (keyed by request and user). Rare and small: written directly."""
        with self.connection() as db:
            db["feedback"].insert(row, replace=True)

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
