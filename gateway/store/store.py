"""`Store`: the log as the gateway sees it. The schema made sure of at open, the writer thread for
request records (`writer.py`), reads that see a record whether it is still queued or written, and
connections for everything else."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import sqlite_utils

from gateway.config import StoreConfig
from gateway.store.feedback import record_feedback
from gateway.store.reads import Conversation, candidate_count_and_winner, request_caller, request_conversation
from gateway.store.records import RequestLog
from gateway.store.schema import caller_salt, connection, ensure_schema
from gateway.store.writer import LogWriter, StoreHealth


class Store:
    """One log database. `log()` is safe from any thread and never blocks on the disk."""

    def __init__(self, path: str | Path, *, on_written: Callable[[int], None] | None = None,
                 on_write_error: Callable[[], None] | None = None, **settings: Any) -> None:
        """`settings`: StoreConfig's other fields (batch_size, flush_interval_s, max_queue, …); the
        writer is not started. `on_written` sees each committed count, `on_write_error` each failed write."""
        self.config = StoreConfig(path=Path(path), **settings)
        self.path = self.config.path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.connection() as db:
            ensure_schema(db)
            self.caller_salt = caller_salt(db)
        self.writer = LogWriter(self.config, on_written, on_write_error)

    @classmethod
    def from_config(cls, config: StoreConfig, **callbacks: Any) -> Store:
        """The store `config` describes; `callbacks`: on_written, on_write_error."""
        return cls(config.path, **config.model_dump(exclude={"path"}), **callbacks)

    @property
    def spill_path(self) -> Path:
        return self.writer.spill.path

    def connection(self) -> AbstractContextManager[sqlite_utils.Database]:
        """A connection for one unit of work (readers, the rollout, the distill job), closed when the
        `with` block ends."""
        return connection(self.path)

    def start(self) -> None:
        """Start the writer; it first takes in what earlier runs left (killed processes' journals, the
        spill file)."""
        self.writer.start()

    def close(self) -> None:
        """Commit what is queued within shutdown_timeout_s; spill whatever is still uncommitted then."""
        self.writer.close()

    def log(self, record: RequestLog) -> None:
        """Journal the record and queue it for the database: call before answering the request."""
        self.writer.log(record)

    def journal_only(self, record: RequestLog) -> None:
        """Journal a first version of a record whose final one is logged later (see `LogWriter`)."""
        self.writer.journal_only(record)

    def accepting(self) -> bool:
        """False while the queue is at its bound: the gateway answers 503 instead of taking more work."""
        return self.writer.queue_depth() < self.config.max_queue

    def queue_depth(self) -> int:
        return self.writer.queue_depth()

    def health(self) -> StoreHealth:
        return self.writer.health()

    def candidates_of(self, request_id: str) -> tuple[int, int | None] | None:
        """(candidate count, winner index) of a logged request, queued or written; None if unknown."""
        pending = self.writer.pending(request_id)
        if pending is not None:
            return len(pending.candidates), pending.request.get("winner_index")
        with self.connection() as db:
            return candidate_count_and_winner(db, request_id)

    def caller_of(self, request_id: str) -> str | None:
        """The salted key hash a logged request was made with (queued or written), else None."""
        pending = self.writer.pending(request_id)
        if pending is not None:
            return pending.request.get("caller")
        with self.connection() as db:
            return request_caller(db, request_id)

    def conversation_of(self, request_id: str) -> Conversation | None:
        """A logged request's messages and returned answer (queued or written), else None."""
        pending = self.writer.pending(request_id)
        if pending is not None:
            answer = next((c for c in pending.candidates if c.get("returned_rank") == 0), None)
            if answer is None:
                return None
            return Conversation.of(pending.request.get("caller"), pending.request["messages"], answer.get("text"),
                                   answer.get("message"))
        with self.connection() as db:
            return request_conversation(db, request_id)

    def record_feedback(self, row: dict[str, Any]) -> None:
        """Upsert one verdict (keyed by request and user)."""
        with self.connection() as db:
            record_feedback(db, row)
