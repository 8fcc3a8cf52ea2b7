"""The background writer: requests never wait on the disk, and an acknowledged record is never lost.

A request puts its record on a queue and is answered; one thread drains the queue in batches, one
transaction per batch. While the database refuses writes (locked by another process, disk full, I/O
errors) the writer retries the same batch with backoff, counts the failures and keeps every record in
memory; `health()` says so, and the queue has a bound (`max_queue`) past which the gateway refuses new
requests (503) rather than buffering without end.

At shutdown the writer gets `shutdown_timeout_s` to commit what is queued. Whatever is still
uncommitted then, whatever the cause, goes to the spill file (`spill.py`), and the log line says how
many records went where. The next `start()` imports the spill file before anything else, so no record
needs a person to recover it.

A process killed outright runs no shutdown: for that, each record is also appended to the journal
(`journal.py`) before the request is answered, and the next start replays what a dead process left.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from gateway.config import StoreConfig
from gateway.store.journal import Journal
from gateway.store.records import RequestLog, chunks, write_records
from gateway.store.retention import prune
from gateway.store.schema import open_database
from gateway.store.spill import SpillFile

log = logging.getLogger(__name__)

_STOP = object()
RETENTION_CHECK_S = 3600.0  # how often the writer applies retention_days


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


class LogWriter:
    """Owns the writer thread. `log()` is safe from any thread and never blocks on the disk."""

    def __init__(self, settings: StoreConfig, on_written: Callable[[int], None] | None = None,
                 on_write_error: Callable[[], None] | None = None) -> None:
        self.path = settings.path
        self.settings = settings
        self.spill = SpillFile(settings.path)
        self.journal = Journal(settings.path) if settings.journal else None
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

    def start(self) -> None:
        """Open the journal and start the thread; it first takes in what earlier runs left: the
        journals of killed processes, then the spill file."""
        if self.journal is not None:
            try:
                self.journal.open()
            except OSError as exc:
                log.error("store: cannot open the journal in %s (%s); serving without it: a kill loses the "
                          "records not yet committed", self.journal.directory, exc)
                self.journal = None
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="tao-store-writer", daemon=True)
        self._thread.start()

    def log(self, record: RequestLog) -> None:
        """Journal the record, then queue it for the database (the caller answers after this)."""
        if self.journal is not None:
            self.journal.append(record)
        self._pending[record.id] = record
        self._queue.put(record)

    def journal_only(self, record: RequestLog) -> None:
        """Journal a first version of a record whose final one is logged later (a reply scored after it
        was sent): a kill in between still leaves the request in the log, unscored."""
        if self.journal is not None:
            self.journal.append(record)

    def pending(self, request_id: str) -> RequestLog | None:
        """The record of a request logged and not yet committed, else None."""
        return self._pending.get(request_id)

    def queue_depth(self) -> int:
        return len(self._pending)

    def health(self) -> StoreHealth:
        failing_since = self._failing_since
        return StoreHealth(queue_depth=len(self._pending), max_queue=self.settings.max_queue,
                           last_error=self._last_error,
                           failing_for_s=None if failing_since is None else time.monotonic() - failing_since)

    def close(self) -> None:
        """Commit what is queued within shutdown_timeout_s; spill whatever is still uncommitted then."""
        if self._thread is None:
            return
        timeout_s = self.settings.shutdown_timeout_s
        self._stop_deadline = time.monotonic() + timeout_s
        self._stopping.set()
        self._queue.put(_STOP)
        self._thread.join(timeout_s)
        stuck = self._thread.is_alive()
        if stuck and self._writer_db is not None:
            self._writer_db.conn.interrupt()  # stop a statement waiting on a lock or a slow disk
        self._thread = None
        left = list(self._pending.copy().values())  # copy() is atomic: a stuck writer may still pop
        if not left:
            log.info("store: %d records committed to %s, none left over", self.written, self.path)
            self._close_journal(keep=False)
            return
        reason = self._last_error or f"not committed within store.shutdown_timeout_s ({timeout_s:g} s)"
        spilled_to = self.spill.append(left)
        self._close_journal(keep=spilled_to == "stderr")  # the spill file holds them now, unless it failed
        log.error("store: %d records committed to %s; %d were not (%s) and went to %s; the next start "
                  "imports them", self.written, self.path, len(left), reason, spilled_to)

    def _close_journal(self, keep: bool) -> None:
        if self.journal is not None:
            self.journal.close(keep=keep)

    # ---- on the writer thread ---------------------------------------------------------------------
    def _run(self) -> None:
        db = self._writer_db = open_database(self.path, self.settings.busy_timeout_s)
        db.execute(f"PRAGMA journal_size_limit = {self.settings.journal_size_limit_mb * 1024 * 1024}")
        try:
            self._replay_orphans()
            self.spill.import_into(db, self.settings.batch_size)
            next_prune = time.monotonic()
            while True:
                batch, stop = self._next_batch()
                if batch and not self._write_until_done(db, batch):
                    return  # stopping and the database still refuses: close() spills what is pending
                if stop:
                    return
                if self.settings.retention_days is not None and time.monotonic() >= next_prune:
                    self._apply_retention(db, self.settings.retention_days)
                    next_prune = time.monotonic() + RETENTION_CHECK_S
        except Exception:  # noqa: BLE001 - the writer must never die silently; close() spills
            log.exception("store writer stopped")
        finally:
            self._writer_db = None
            db.close()

    def _replay_orphans(self) -> None:
        """Queue the records that killed processes left in their journals (the last version of each),
        journalled again as this process's own before their files go."""
        if self.journal is None:
            return
        with self.journal.orphans() as records:
            latest = {record.id: record for record in records}
            for record in latest.values():
                self.log(record)

    def _next_batch(self) -> tuple[list[RequestLog], bool]:
        """Up to batch_size records (waiting flush_interval_s for the first), and whether to stop."""
        batch: list[RequestLog] = []
        try:
            item = self._queue.get(timeout=self.settings.flush_interval_s)
        except queue.Empty:
            return batch, False
        while True:
            if item is _STOP:
                # Records logged after the stop marker (late background scoring) are taken too.
                return batch + self._drain_queue(), True
            batch.append(item)
            if len(batch) >= self.settings.batch_size:
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

    def _committed(self, records: list[RequestLog]) -> None:
        for record in records:
            self._pending.pop(record.id, None)
        if self.journal is not None:
            self.journal.committed(record.id for record in records)
        self.written += len(records)
        self._on_written(len(records))

    def _write_until_done(self, db: sqlite_utils.Database, batch: list[RequestLog]) -> bool:
        """Write the batch, retrying with backoff while the database refuses; False if the store is
        stopping and it still refuses (the records stay pending, for close() to spill)."""
        delay = 0.05
        while True:
            try:
                for chunk in chunks(batch, self.settings.batch_size):
                    write_records(db, chunk)
                    self._committed(chunk)
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
                write_records(db, [record])
            except sqlite3.OperationalError:
                return  # the database itself is failing after all: the caller's loop retries the rest
            except sqlite3.Error as record_exc:
                log.error("store: request %s cannot be written (%s); kept in %s", record.id, record_exc,
                          self.spill.append([record]))
                self._pending.pop(record.id, None)
                if self.journal is not None:
                    self.journal.committed([record.id])
            else:
                self._committed([record])
        log.warning("store: a batch failed on its data (%s); wrote it record by record", exc)

    def _apply_retention(self, db: sqlite_utils.Database, retention_days: float) -> None:
        try:
            removed = prune(db, time.time() - retention_days * 86400)
        except sqlite3.Error as exc:
            log.warning("store: applying retention failed (%s); trying again in an hour", exc)
            return
        if removed.requests:
            log.info("store: retention removed %d requests older than %g days", removed.requests, retention_days)
