"""The log's schema: its tables and columns, the values its enum columns take, and how to open it.

This is the only place the tables are defined. Every column dict below is the table as
`sqlite-utils` creates it; a comment says what a column means wherever its name does not.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path

import sqlite_utils



class RequestStatus(StrEnum):
    """`requests.status`: how a request ended."""

    OK = "ok"
    DEGRADED = "degraded"  # answered, but the scorer failed (no scores), or no candidate held the request's contract
    ERROR = "error"  # no answer (upstream failure, client error after parsing, client gone)


class Arm(StrEnum):
    """`requests.arm`: which side of a rollout served the request."""

    BASE = "base"  # the incumbent: the base weights at the model's best_of, or during a canary that follows a
    # promotion the promoted checkpoint at its k; every request without a rollout
    CANDIDATE = "candidate"  # the canary checkpoint
    SHADOW = "shadow"  # the canary answering an incumbent request in the background (never returned)
    PROMOTED = "promoted"  # the checkpoint after promotion
    EXPLORE = "explore"  # the promoted checkpoint at the incumbent's best-of-N: the next cycle's training data


# Requests whose best-of-N candidates are what distill learns from and measures against: the incumbent's,
# and after a promotion the promoted checkpoint's own best-of-N (TAO's continuous improvement).
TRAINING_ARMS = (Arm.BASE, Arm.EXPLORE)


class FeedbackKind(StrEnum):
    """`feedback.kind`: what a person's verdict says."""

    PREFERENCE = "preference"  # candidate_index is better than every other candidate
    RATING = "rating"  # the served candidate_index is worth `rating` in [0, 1]
    PAIRWISE = "pairwise"  # candidate_index is better than rejected_index


SHADOW_SUFFIX = "-shadow"  # a shadow reply's request id is its incumbent request's id plus this


class CheckpointStatus(StrEnum):
    """`checkpoints.status`."""

    CANDIDATE = "candidate"  # published, may be rolled out
    REJECTED = "rejected"  # refused by the eval gate (no files)
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"  # its rollout was rolled back: its data window is distilled again
    RETIRED = "retired"


class RolloutState(StrEnum):
    """`rollouts.state`."""

    CANARY = "canary"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"


# `checkpoints.method` of a reward model trained by `tao reward train`. Such a row records where the
# scorer's weights are; it never serves traffic and never moves the distill window.
REWARD_MODEL_METHOD = "reward"

REQUESTS_COLUMNS: dict[str, type] = {
    "id": str,
    "created_at": float,  # unix seconds
    "model": str,  # public model name
    "arm": str,  # Arm: rollout arm that served it ("base" without a rollout)
    "model_version": str,
    "endpoint": str,  # "chat", "completion", or "responses" (served as chat: its messages are chat messages)
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
    "user": str,  # the request's `user` field, as the client sent it
    "caller": str,  # salted hash of the API key that made the request ("anonymous" without one)
    "status": str,  # RequestStatus: ok | degraded | error
    "http_status": int,
    "error": str,
    "readings": str,  # JSON: the instructions the scorer read ({kind, args}) and the sentences it could not verify
}
CANDIDATES_COLUMNS: dict[str, type] = {
    "request_id": str,
    "idx": int,  # generation order
    "text": str,
    "message": str,  # JSON assistant message, only when it holds more than `text` (tool calls); else null
    "finish_reason": str,
    "tokens": int,
    "score": float,
    "won": int,  # 1 for the top-scored candidate
    "returned_rank": int,  # position among the choices returned to the client, else null
    "violation": str,  # how it broke its request's contract (tools' schemas, tool_choice, response_format); null: held
    "met": str,  # JSON: per instruction in the request's readings, whether this candidate meets it; null: unchecked
}
FEEDBACK_COLUMNS: dict[str, type] = {
    "request_id": str,
    "user": str,  # with request_id, the key: feedback is idempotent per (request, user)
    "created_at": float,
    "kind": str,  # FeedbackKind: preference | rating | pairwise
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
    "method": str,  # dpo | grpo | sft: a distilled adapter; REWARD_MODEL_METHOD ("reward"): a reward model
    "data_since": float,
    "data_until": float,  # the next distill run starts here, unless this one was rejected or rolled back
    "metrics": str,  # JSON: eval report, data counts, training metrics, the run's config
    "path": str,
    "status": str,  # CheckpointStatus: candidate | rejected | promoted | rolled_back | retired
}
ROLLOUTS_COLUMNS: dict[str, type] = {
    "model": str,  # public model name: one rollout per model at a time
    "checkpoint_id": str,
    "adapter_path": str,
    "state": str,  # RolloutState: canary | promoted | rolled_back | failed
    "share": float,  # percent of traffic on the candidate arm
    "candidate_best_of": int,
    "incumbent_best_of": int,
    "started_at": float,
    "step_started_at": float,  # when the current share began
    "updated_at": float,
    "looks": int,  # looks the policy has taken at the shadow pairs
    "incumbent_checkpoint_id": str,  # during a canary: the promoted checkpoint it would replace (null: base)
    "incumbent_adapter_path": str,
}
LOCKS_COLUMNS: dict[str, type] = {
    "name": str,
    "host": str,
    "pid": int,
    "acquired_at": float,
    "holder": str,  # host:pid:random, unique per run
    "expires_at": float,  # the lease: renewed by the live holder; after it, anyone may take the lock
}
DISTILL_RUNS_COLUMNS: dict[str, type] = {
    "id": int,
    "started_at": float,
    "finished_at": float,
    "outcome": str,  # published | too_little_data | rejected | locked | failed
    "exit_code": int,
    "message": str,
}
META_COLUMNS: dict[str, type] = {"key": str, "value": str}  # e.g. the salt of the caller hashes
ROLLOUT_EVENTS_COLUMNS: dict[str, type] = {
    "id": int,
    "created_at": float,
    "model": str,
    "event": str,  # start | step | promote | rollback | failed
    "checkpoint_id": str,
    "share": float,
    "details": str,  # JSON: the reason and the numbers behind it
}


def open_database(path: str | Path, busy_timeout_s: float = 10.0) -> sqlite_utils.Database:
    """A connection with the pragmas every user of the store wants (WAL, a busy timeout: how long a
    statement waits for another connection's lock before it fails).

    The caller closes it; `connection` does that for one unit of work.
    """
    db = sqlite_utils.Database(path)
    db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
    db.enable_wal()
    return db


@contextmanager
def connection(path: str | Path) -> Iterator[sqlite_utils.Database]:
    """One connection for one unit of work, closed when it ends, whatever happens."""
    db = open_database(path)
    try:
        yield db
    finally:
        db.close()


def ensure_schema(db: sqlite_utils.Database) -> None:
    """Create whatever tables and indexes are missing (existing ones are left as they are)."""
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
    db["meta"].create(META_COLUMNS, pk="key", if_not_exists=True)
    db["distill_runs"].create(DISTILL_RUNS_COLUMNS, pk="id", if_not_exists=True)
    db["requests"].create_index(["model", "created_at"], if_not_exists=True)
    _add_missing_columns(db["rollouts"], ROLLOUTS_COLUMNS)
    _add_missing_columns(db["requests"], REQUESTS_COLUMNS)
    _add_missing_columns(db["candidates"], CANDIDATES_COLUMNS)
    _add_missing_columns(db["locks"], LOCKS_COLUMNS)


def caller_salt(db: sqlite_utils.Database) -> str:
    """This database's random salt for caller hashes, created on first use: the log never holds
    anything from which a key could be recovered or matched against another installation's log."""
    row = db.execute("SELECT value FROM meta WHERE key = 'caller_salt'").fetchone()
    if row is not None:
        return row[0]
    with db.conn:
        db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('caller_salt', ?)", [secrets.token_hex(16)])
    return db.execute("SELECT value FROM meta WHERE key = 'caller_salt'").fetchone()[0]


def _add_missing_columns(table: sqlite_utils.db.Table, columns: dict[str, type]) -> None:
    """Upgrade a table written by an older version: new columns are added, nullable, nothing else changes."""
    existing = table.columns_dict
    for name, kind in columns.items():
        if name not in existing:
            table.add_column(name, kind)
