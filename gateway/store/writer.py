"""The background writer: requests never wait on the disk, and an acknowledged record is never lost.

A request puts its record on a queue and is answered; one thread drains the queue in batches, one
transaction per batch (`INSERT OR REPLACE` by primary key, so a batch written twice is still
one copy of each record). While the database refuses writes (locked by another process, disk
full, I/O errors) the writer retries the same batch with backoff, counts the failures and keeps
every record in memory; `health()` says so, and the queue has a bound (`max_queue`) past which
the gateway refuses new requests (503) rather than buffering without end.

At shutdown the writer gets `shutdown_timeout_s` to commit what is queued. Whatever is still
uncommitted then, whatever the cause, is appended (fsynced) to the spill file beside the
database, `<db>.unwritten.jsonl`, and the log line says how many records went where. The next
`start()` imports the spill file before anything else, so no record needs a person to recover
it; importing is idempotent, so a record both committed and spilled (a race at the deadline) is
still one row.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlite_utils

from gateway.config import StoreConfig
from gateway.store.reads import candidate_count_and_winner, request_caller
from gateway.store.retention import prune
from gateway.store.schema import (
    CANDIDATES_COLUMNS,
    REQUESTS_COLUMNS,
    caller_salt,
    connection,
    ensure_schema,
    open_database,
)

log = logging.getLogger(__name__)

_STOP = object()
_REQUEST_COLUMNS = tuple(REQUESTS_COLUMNS)
_CANDIDATE_COLUMNS = tuple(CANDIDATES_COLUMNS)
_INSERT_REQUESTS = (f"INSERT OR REPLACE INTO requests ({', '.join(_REQUEST_COLUMNS)}) "
                    f"VALUES ({', '.join('?' * len(_REQUEST_COLUMNS))})")
_INSERT_CANDIDATES = (f"INSERT OR REPLACE INTO candidates ({', '.join(_CANDIDATE_COLUMNS)}) "
                      f"VALUES ({', '.join('?' * len(_CANDIDATE_COLUMNS))})")
RETENTION_CHECK_S = 3600.0  # how often the writer applies retention_days


@dataclass
class RequestLog:
    """Everything about one request: its `requests` row and its `candidates` rows."""

    request: dict[str, Any]
    candidates: list[dict[str, Any]] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.request["id"]


@dataclass(frozen=True)
class StoreHealth:
    """What `/healthz` reports about the log."""

    queue_depth: int
    max_queue: int
    last_error: str | None  # the last failed write, while writes keep failing
    failing_for_s: float | None  # how long writes have been failing; None while they succeed

    @property
    def ok(self) -> bool:
        return self.failing_for_s is None and self.queue_depth < self.max_queue

    @property
    def reason(self) -> str | None:
        if self.queue_depth >= self.max_queue:
            return f"log queue full: {self.queue_depth} records waiting (store.max_queue {self.max_queue})"
        if self.failing_for_s is not None:
            return f"log writes failing for {self.failing_for_s:.0f} s: {self.last_error}"
        return None


class Store:
    """Owns the writer thread. `log()` is safe from any thread and never blocks on the disk."""

    def __init__(
        self,
        path: str | Path,
        *,
        batch_size: int = 256,
        flush_interval_s: float = 0.05,
        max_queue: int = 100_000,
        shutdown_timeout_s: float = 10.0,
        retention_days: float | None = None,
        journal_size_limit_mb: int = 64,
        busy_timeout_s: float = 10.0,
        on_written: Callable[[int], None] | None = None,
        on_write_error: Callable[[], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.spill_path = self.path.with_name(self.path.name + ".unwritten.jsonl")
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.max_queue = max_queue
        self.shutdown_timeout_s = shutdown_timeout_s
        self.retention_days = retention_days
        self.journal_size_limit = journal_size_limit_mb * 1024 * 1024
        self.busy_timeout_s = busy_timeout_s
        self._on_written = on_written or (lambda count: None)
        self._on_write_error = on_write_error or (lambda: None)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._pending: dict[str, RequestLog] = {}  # logged, not yet committed (queued or being written)
        self._thread: threading.Thread | None = None
        self._writer_db: sqlite_utils.Database | None = None
        self._stopping = threading.Event()
        self._stop_deadline = 0.0
        self._last_error: str | None = None
        self._failing_since: float | None = None
        self.written = 0  # records committed since start()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.connection() as db:
            ensure_schema(db)
            self.caller_salt = caller_salt(db)

    @classmethod
    def from_config(cls, config: StoreConfig, **callbacks: Any) -> Store:
        """The store `config` describes (its writer not started); `callbacks`: on_written, on_write_error."""
        return cls(config.path, batch_size=config.batch_size, flush_interval_s=config.flush_interval_s,
                   max_queue=config.max_queue, shutdown_timeout_s=config.shutdown_timeout_s,
                   retention_days=config.retention_days, journal_size_limit_mb=config.journal_size_limit_mb,
                   busy_timeout_s=config.busy_timeout_s, **callbacks)

    def connection(self) -> AbstractContextManager[sqlite_utils.Database]:
        """A connection for one unit of work (readers, the rollout, the distill job), closed when the
        `with` block ends."""
        return connection(self.path)

    def start(self) -> None:
        """Start the writer; it first imports records a previous run spilled."""
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="tao-store-writer", daemon=True)
        self._thread.start()

    def log(self, record: RequestLog) -> None:
        self._pending[record.id] = record
        self._queue.put(record)

    def accepting(self) -> bool:
        """False while the queue is at its bound: the gateway answers 503 instead of taking more work."""
        return len(self._pending) < self.max_queue

    def candidates_of(self, request_id: str) -> tuple[int, int | None] | None:
        """(candidate count, winner index) of a logged request, queued or written; None if unknown."""
        pending = self._pending.get(request_id)
        if pending is not None:
            return len(pending.candidates), pending.request.get("winner_index")
        with self.connection() as db:
            return candidate_count_and_winner(db, request_id)

    def caller_of(self, request_id: str) -> str | None:
        """The salted key hash a logged request was made with (queued or written), else None."""
        pending = self._pending.get(request_id)
        if pending is not None:
            return pending.request.get("caller")
        with self.connection() as db:
            return request_caller(db, request_id)

    def record_feedback(self, row: dict[str, Any]) -> None:
        """Upsert one verdict (keyed by request and user). Rare and small: written directly."""
        with self.connection() as db:
            db["feedback"].insert(row, replace=True)

    def queue_depth(self) -> int:
        return len(self._pending)

    def health(self) -> StoreHealth:
        failing_since = self._failing_since
        return StoreHealth(queue_depth=len(self._pending), max_queue=self.max_queue, last_error=self._last_error,
                           failing_for_s=None if failing_since is None else time.monotonic() - failing_since)

    def close(self) -> None:
        """Commit what is queued within shutdown_timeout_s; spill whatever is still uncommitted then."""
        if self._thread is None:
            return
        self._stop_deadline = time.monotonic() + self.shutdown_timeout_s
        self._stopping.set()
        self._queue.put(_STOP)
        self._thread.join(self.shutdown_timeout_s)
        stuck = self._thread.is_alive()
        if stuck and self._writer_db is not None:
            self._writer_db.conn.interrupt()  # stop a statement waiting on a lock or a slow disk
        self._thread = None
        left = list(self._pending.copy().values())  # copy() is atomic: a stuck writer may still pop
        if not left:
            log.info("store: %d records committed to %s, none left over", self.written, self.path)
            return
        reason = self._last_error or f"not committed within store.shutdown_timeout_s ({self.shutdown_timeout_s:g} s)"
        spilled_to = self._spill(left)
        log.error("store: %d records committed to %s; %d were not (%s) and went to %s; the next start "
                  "imports them", self.written, self.path, len(left), reason, spilled_to)

    # ---- the writer thread ------------------------------------------------------------------------
    def _run(self) -> None:
        db = self._writer_db = open_database(self.path, self.busy_timeout_s)
        db.execute(f"PRAGMA journal_size_limit = {self.journal_size_limit}")
        try:
            self._import_spill(db)
            next_prune = time.monotonic()
            while True:
                batch, stop = self._next_batch()
                if batch and not self._write_until_done(db, batch):
                    return  # stopping and the database still refuses: close() spills what is pending
                if stop:
                    return
                if self.retention_days is not None and time.monotonic() >= next_prune:
                    self._apply_retention(db)
                    next_prune = time.monotonic() + RETENTION_CHECK_S
        except Exception:  # noqa: BLE001 - the writer must never die silently; close() spills
            log.exception("store writer stopped")
        finally:
            self._writer_db = None
            db.close()

    def _next_batch(self) -> tuple[list[RequestLog], bool]:
        """Up to batch_size records (waiting flush_interval_s for the first), and whether to stop."""
        batch: list[RequestLog] = []
        try:
            item = self._queue.get(timeout=self.flush_interval_s)
        except queue.Empty:
            return batch, False
        while True:
            if item is _STOP:
                # Records logged after the stop marker (late background scoring) are taken too.
                return batch + self._drain_queue(), True
            batch.append(item)
            if len(batch) >= self.batch_size:
                return batch, False
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return batch, False

    def _drain_queue(self) -> list[RequestLog]:
        rest = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return rest
            if item is not _STOP:
                rest.append(item)

    def _write_until_done(self, db: sqlite_utils.Database, batch: list[RequestLog]) -> bool:
        """Write the batch, retrying with backoff while the database refuses; False if the store is
        stopping and it still refuses (the records stay pending, for close() to spill)."""
        delay = 0.05
        while True:
            try:
                for chunk in _chunks(batch, self.batch_size):
                    _write(db, chunk)
                    for record in chunk:
                        self._pending.pop(record.id, None)
                    self.written += len(chunk)
                    self._on_written(len(chunk))
                self._failing_since = self._last_error = None
                return True
            except (sqlite3.OperationalError, OSError) as exc:  # locked, full, I/O: the database's trouble
                self._on_write_error()
                self._last_error = f"{type(exc).__name__}: {exc}"
                if self._failing_since is None:
                    self._failing_since = time.monotonic()
                log.warning("store: writing %d records failed (%s); retrying", len(batch), self._last_error)
                batch = [r for r in batch if r.id in self._pending]
                if self._stopping.is_set():  # keep trying until close() gives up on us
                    remaining = self._stop_deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    time.sleep(min(delay, remaining))
                else:
                    self._stopping.wait(delay)  # a stop wakes it for one more try at once
                delay = min(delay * 2, 2.0)
            except sqlite3.Error as exc:  # a record the database cannot take: retrying will not help
                self._on_write_error()
                batch = [r for r in batch if r.id in self._pending]
                self._set_aside_unwritable(db, batch, exc)

    def _set_aside_unwritable(self, db: sqlite_utils.Database, batch: list[RequestLog], exc: Exception) -> None:
        """Write the batch one record at a time; records that still fail go to the spill file (kept for
        a person, with the error in the log) instead of blocking every record behind them."""
        for record in batch:
            try:
                _write(db, [record])
                self.written += 1
                self._on_written(1)
            except sqlite3.OperationalError:
                return  # the database itself is failing after all: the caller's loop retries the rest
            except sqlite3.Error as record_exc:
                log.error("store: request %s cannot be written (%s); kept in %s", record.id, record_exc,
                          self._spill([record]))
            self._pending.pop(record.id, None)
        log.warning("store: a batch failed on its data (%s); wrote it record by record", exc)

    # ---- spill file -------------------------------------------------------------------------------
    def _spill(self, records: list[RequestLog]) -> str:
        """Append records to the spill file, fsynced; if even that fails, print them to stderr."""
        lines = "".join(json.dumps({"request": r.request, "candidates": r.candidates}) + "\n" for r in records)
        try:
            with self.spill_path.open("a") as f:
                f.write(lines)
                f.flush()
                os.fsync(f.fileno())
            return str(self.spill_path)
        except OSError as exc:
            log.error("store: cannot write the spill file %s (%s); printing the records to stderr, one JSON "
                      "object per line after 'TAO-UNWRITTEN '", self.spill_path, exc)
            sys.stderr.write("".join(f"TAO-UNWRITTEN {line}" for line in lines.splitlines(keepends=True)))
            sys.stderr.flush()
            return "stderr"

    def _import_spill(self, db: sqlite_utils.Database) -> None:
        """Import spilled records: a file left mid-import by a crash first, then the spill file.

        The spill file is renamed before it is read, so a shutdown during the import appends to a
        fresh file instead of to one about to be deleted.
        """
        importing = self.spill_path.with_name(self.spill_path.name + ".importing")
        if not importing.exists() and self.spill_path.exists():
            self.spill_path.rename(importing)
        if not importing.exists():
            return
        records, bad = _read_spill(importing)
        if bad:
            rejected = importing.with_name(self.spill_path.name + ".bad")
            with rejected.open("a") as f:
                f.writelines(bad)
            log.error("store: %d unreadable lines of %s kept in %s", len(bad), importing, rejected)
        try:
            for chunk in _chunks(records, self.batch_size):
                _write(db, chunk)
        except (sqlite3.Error, OSError) as exc:
            log.error("store: importing %d spilled records failed (%s); %s stays for the next start",
                      len(records), exc, importing)
            return
        importing.unlink()
        log.info("store: imported %d records a previous run spilled to %s", len(records), self.spill_path)

    def _apply_retention(self, db: sqlite_utils.Database) -> None:
        try:
            removed = prune(db, time.time() - self.retention_days * 86400)
        except sqlite3.Error as exc:
            log.warning("store: applying retention failed (%s); trying again in an hour", exc)
            return
        if removed.requests:
            log.info("store: retention removed %d requests older than %g days", removed.requests,
                     self.retention_days)


def _write(db: sqlite_utils.Database, batch: list[RequestLog]) -> None:
    """One transaction: candidates first, so a reader that sees a request row sees its candidates."""
    candidates = [tuple(c.get(k) for k in _CANDIDATE_COLUMNS) for r in batch for c in r.candidates]
    requests = [tuple(r.request.get(k) for k in _REQUEST_COLUMNS) for r in batch]
    with db.conn:
        if candidates:
            db.conn.executemany(_INSERT_CANDIDATES, candidates)
        db.conn.executemany(_INSERT_REQUESTS, requests)


def _chunks(records: list[RequestLog], size: int) -> Iterator[list[RequestLog]]:
    for start in range(0, len(records), size):
        yield records[start:start + size]


def _read_spill(path: Path) -> tuple[list[RequestLog], list[str]]:
    """The records of a spill file, and the lines that are not records (a write cut by a crash)."""
    records, bad = [], []
    for line in _lines(path):
        try:
            data = json.loads(line)
            records.append(RequestLog(request=data["request"], candidates=data["candidates"]))
        except (ValueError, KeyError, TypeError):
            bad.append(line if line.endswith("\n") else line + "\n")
    return records, bad


def _lines(path: Path) -> Iterable[str]:
    with path.open() as f:
        yield from (line for line in f if line.strip())
