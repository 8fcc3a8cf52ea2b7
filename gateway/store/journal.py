"""The journal: a record is on disk before its reply is sent, so a killed process loses nothing it
acknowledged.

The writer commits records in batches, off the request path; until it does, a record lives in the
process's memory. SIGTERM, a locked database and a full disk are covered by the spill file
(`spill.py`), but SIGKILL, the OOM killer or an eviction past the grace period skip every handler.
So each record is also appended to a journal file, one JSON line, with one `write` and no fsync: it
survives the death of the process (the kernel has the page), not the loss of the machine.

Layout: `<db>.journal/`, where each process owns `<owner>.lock` (held with `flock` for its life) and
its segments `<owner>.<seq>.jsonl`. Once every record of the open segment is committed it is
truncated; past `SEGMENT_BYTES` a new segment is opened and the sealed one is deleted when its
records are all committed. At start the writer replays the segments of every owner whose lock is
free (its process is gone) before anything else, then deletes them: writes are by primary key, so a
record both committed and replayed is still one row, and a later version of a record (scored after
the reply) replaces the earlier one, as it follows it in the file. Several processes on one
database (`--workers`) each keep their own journal and never replay a live one's.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from gateway.store.records import RequestLog
from gateway.store.spill import read_records

log = logging.getLogger(__name__)

SEGMENT_BYTES = 16 * 1024 * 1024  # a segment this large is sealed and a new one opened
ERROR_LOG_INTERVAL_S = 60.0  # a failing journal is reported at most this often


def journal_directory(database: Path) -> Path:
    return database.with_name(database.name + ".journal")


@dataclass
class _Segment:
    path: Path
    size: int = 0
    outstanding: set[str] = field(default_factory=set)  # ids appended here and not yet committed


class Journal:
    """One process's journal. `append` is safe from any thread; it never raises (a failing journal is
    logged, and the record is still queued as before)."""

    def __init__(self, database: Path) -> None:
        self.directory = journal_directory(database)
        self.owner = f"{os.getpid()}-{time.time_ns()}"
        self._lock = threading.Lock()
        self._lock_file: int | None = None
        self._file: int | None = None
        self._segments: dict[int, _Segment] = {}
        self._current = 0
        self._where: dict[str, set[int]] = {}  # record id -> segments holding an uncommitted version
        self._last_error_logged = 0.0
        self.failures = 0

    # ---- this process's journal -------------------------------------------------------------------
    def open(self) -> None:
        """Create the directory, take this owner's lock, open the first segment."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_file = os.open(self.directory / f"{self.owner}.lock", os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._open_segment(0)

    def append(self, record: RequestLog) -> None:
        """One line, one write: on disk (in the page cache) when this returns."""
        line = orjson.dumps({"request": record.request, "candidates": record.candidates}) + b"\n"
        with self._lock:
            if self._file is None:
                return
            segment = self._segments[self._current]
            try:
                written = os.write(self._file, line)
                if written != len(line):  # a short write on a full disk: the line is cut, the reader skips it
                    raise OSError(f"short write: {written} of {len(line)} bytes")
            except OSError as exc:
                self._failed(exc)
                return
            segment.size += len(line)
            segment.outstanding.add(record.id)
            self._where.setdefault(record.id, set()).add(self._current)

    def committed(self, ids: Iterable[str]) -> None:
        """These records are in the database: forget them, and drop what holds nothing else."""
        with self._lock:
            for record_id in ids:
                for seq in self._where.pop(record_id, ()):
                    self._segments[seq].outstanding.discard(record_id)
            if self._file is None:
                return
            try:
                self._drop_committed()
            except OSError as exc:
                self._failed(exc)

    def close(self, keep: bool = False) -> None:
        """Stop journalling; delete this owner's files unless `keep` (their records are nowhere else:
        the next start replays them)."""
        with self._lock:
            if self._file is not None:
                os.close(self._file)
                self._file = None
            if not keep:
                for segment in self._segments.values():
                    segment.path.unlink(missing_ok=True)
                (self.directory / f"{self.owner}.lock").unlink(missing_ok=True)
            self._segments.clear()
            self._where.clear()
            if self._lock_file is not None:
                os.close(self._lock_file)  # releases the flock: a later start may replay what was kept
                self._lock_file = None

    def _open_segment(self, seq: int) -> None:
        if self._file is not None:
            os.close(self._file)
        path = self.directory / f"{self.owner}.{seq:06d}.jsonl"
        self._file = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_APPEND | os.O_TRUNC, 0o600)
        self._segments[seq] = _Segment(path)
        self._current = seq

    def _drop_committed(self) -> None:
        current = self._segments[self._current]
        for seq, segment in list(self._segments.items()):
            if seq != self._current and not segment.outstanding:
                segment.path.unlink(missing_ok=True)
                del self._segments[seq]
        if not current.outstanding and current.size:
            os.ftruncate(self._file, 0)
            current.size = 0
        elif current.size >= SEGMENT_BYTES:
            self._open_segment(self._current + 1)

    def _failed(self, exc: OSError) -> None:
        self.failures += 1
        now = time.monotonic()
        if now - self._last_error_logged >= ERROR_LOG_INTERVAL_S:
            self._last_error_logged = now
            log.error("store: the journal %s cannot be written (%s; %d failures so far); records are still "
                      "queued for the database, but a kill before they are committed loses them",
                      self.directory, exc, self.failures)

    # ---- what dead processes left -----------------------------------------------------------------
    @contextmanager
    def orphans(self) -> Iterator[list[RequestLog]]:
        """The records in the journals of processes that are gone, oldest segment first. Their files
        are deleted when the block exits without an exception (the caller has committed them), and
        kept otherwise, for the next start."""
        held: list[tuple[int, list[Path]]] = []
        records: list[RequestLog] = []
        try:
            for owner, segments in self._owners().items():
                if owner == self.owner:
                    continue
                lock_fd = _lock_if_free(self.directory / f"{owner}.lock")
                if lock_fd is None:
                    continue  # its process is alive: another worker on this database
                held.append((lock_fd, [*segments, self.directory / f"{owner}.lock"]))
                for path in segments:
                    found, bad = read_records(path)
                    records += found
                    if bad:
                        log.warning("store: %d unreadable lines in %s (a write cut short); skipped", len(bad), path)
            yield records
            for _, paths in held:
                for path in paths:
                    path.unlink(missing_ok=True)
            if records:
                log.info("store: replayed %d records from the journals of %d stopped processes in %s",
                         len(records), len(held), self.directory)
        finally:
            for lock_fd, _ in held:
                os.close(lock_fd)

    def _owners(self) -> dict[str, list[Path]]:
        owners: dict[str, list[Path]] = {}
        if not self.directory.is_dir():
            return owners
        for path in sorted(self.directory.iterdir()):
            owner, _, rest = path.name.partition(".")
            if rest == "lock":
                owners.setdefault(owner, [])
            elif rest.endswith(".jsonl"):
                owners.setdefault(owner, []).append(path)
        return owners


def _lock_if_free(path: Path) -> int | None:
    """An fd holding `path`'s flock, or None while another process holds it."""
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd
