"""A request's log record and the one transaction that writes records: shared by the writer thread
and the spill file's import, so both write exactly the same rows."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import sqlite_utils

from gateway.store.schema import CANDIDATES_COLUMNS, REQUESTS_COLUMNS

_REQUEST_COLUMNS = tuple(REQUESTS_COLUMNS)
_CANDIDATE_COLUMNS = tuple(CANDIDATES_COLUMNS)
_INSERT_REQUESTS = (f"INSERT OR REPLACE INTO requests ({', '.join(_REQUEST_COLUMNS)}) "
                    f"VALUES ({', '.join('?' * len(_REQUEST_COLUMNS))})")
_INSERT_CANDIDATES = (f"INSERT OR REPLACE INTO candidates ({', '.join(_CANDIDATE_COLUMNS)}) "
                      f"VALUES ({', '.join('?' * len(_CANDIDATE_COLUMNS))})")


@dataclass
class RequestLog:
    """Everything about one request: its `requests` row and its `candidates` rows."""

    request: dict[str, Any]
    candidates: list[dict[str, Any]] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.request["id"]


def write_records(db: sqlite_utils.Database, batch: list[RequestLog]) -> None:
    """One transaction: candidates first, so a reader that sees a request row sees its candidates.
    `INSERT OR REPLACE` by primary key, so a batch written twice is still one copy of each record."""
    candidates = [tuple(c.get(k) for k in _CANDIDATE_COLUMNS) for r in batch for c in r.candidates]
    requests = [tuple(r.request.get(k) for k in _REQUEST_COLUMNS) for r in batch]
    with db.conn:
        if candidates:
            db.conn.executemany(_INSERT_CANDIDATES, candidates)
        db.conn.executemany(_INSERT_REQUESTS, requests)


def chunks(records: list[RequestLog], size: int) -> Iterator[list[RequestLog]]:
    for start in range(0, len(records), size):
        yield records[start:start + size]
