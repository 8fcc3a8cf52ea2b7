"""The spill file beside the database, `<db>.unwritten.jsonl`: where records the writer could not
commit go at shutdown (appended and fsynced), and where the next start imports them from.

Importing is idempotent (records are written by primary key), so a record both committed and spilled
(a race at the shutdown deadline) is still one row.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import sys
from collections.abc import Iterable
from pathlib import Path

import sqlite_utils

from gateway.store.records import RequestLog, chunks, write_records

log = logging.getLogger(__name__)


class SpillFile:
    def __init__(self, database: Path) -> None:
        self.path = database.with_name(database.name + ".unwritten.jsonl")

    def append(self, records: list[RequestLog]) -> str:
        """Append records, fsynced; if even that fails, print them to stderr. Returns where they went."""
        lines = "".join(json.dumps({"request": r.request, "candidates": r.candidates}) + "\n" for r in records)
        try:
            with self.path.open("a") as f:
                f.write(lines)
                f.flush()
                os.fsync(f.fileno())
            return str(self.path)
        except OSError as exc:
            log.error("store: cannot write the spill file %s (%s); printing the records to stderr, one JSON "
                      "object per line after 'TAO-UNWRITTEN '", self.path, exc)
            sys.stderr.write("".join(f"TAO-UNWRITTEN {line}" for line in lines.splitlines(keepends=True)))
            sys.stderr.flush()
            return "stderr"

    def import_into(self, db: sqlite_utils.Database, batch_size: int) -> None:
        """Import spilled records: a file left mid-import by a crash first, then the spill file.

        The spill file is renamed before it is read, so a shutdown during the import appends to a
        fresh file instead of to one about to be deleted.
        """
        importing = self.path.with_name(self.path.name + ".importing")
        if not importing.exists() and self.path.exists():
            self.path.rename(importing)
        if not importing.exists():
            return
        records, bad = read_records(importing)
        if bad:
            rejected = importing.with_name(self.path.name + ".bad")
            with rejected.open("a") as f:
                f.writelines(bad)
            log.error("store: %d unreadable lines of %s kept in %s", len(bad), importing, rejected)
        try:
            for chunk in chunks(records, batch_size):
                write_records(db, chunk)
        except (sqlite3.Error, OSError) as exc:
            log.error("store: importing %d spilled records failed (%s); %s stays for the next start",
                      len(records), exc, importing)
            return
        importing.unlink()
        log.info("store: imported %d records a previous run spilled to %s", len(records), self.path)


def read_records(path: Path) -> tuple[list[RequestLog], list[str]]:
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
