"""The checkpoint registry (`checkpoints`): what the distill job and `tao reward train` produced.

Two kinds of rows share the table: distilled adapters (method dpo, grpo or sft), which can be
rolled out and whose data window the next distill run starts after, and reward models (method
`REWARD_MODEL_METHOD`), which are scorers' weights and are neither.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import sqlite_utils

from gateway.store.schema import REWARD_MODEL_METHOD, CheckpointStatus


@dataclass
class Checkpoint:
    """One `checkpoints` row (metrics decoded)."""

    id: str
    created_at: float
    model: str
    base_model: str
    method: str
    data_since: float | None
    data_until: float | None
    metrics: dict[str, Any]  # eval report, data counts, training metrics, the run's config
    path: str | None  # None when the gate rejected it
    status: CheckpointStatus

    @property
    def is_reward_model(self) -> bool:
        return self.method == REWARD_MODEL_METHOD


def register_checkpoint(db: sqlite_utils.Database, checkpoint: Checkpoint) -> None:
    """Insert (or replace, by id) a checkpoint's row."""
    db["checkpoints"].insert({**asdict(checkpoint), "metrics": json.dumps(checkpoint.metrics, default=str)},
                             replace=True)


def get_checkpoint(db: sqlite_utils.Database, checkpoint_id: str) -> Checkpoint | None:
    """The registered checkpoint with this id, or None."""
    rows = list(db["checkpoints"].rows_where("id = ?", [checkpoint_id]))
    if not rows:
        return None
    row = rows[0]
    return Checkpoint(**{**row, "status": CheckpointStatus(row["status"]),
                         "metrics": json.loads(row["metrics"] or "{}")})


def set_checkpoint_status(db: sqlite_utils.Database, checkpoint_id: str, status: CheckpointStatus) -> None:
    """Record what became of a checkpoint (promoted, rolled back, ...). An id no longer registered is
    left alone: a promotion or rollback must not fail on its bookkeeping."""
    with db.conn:
        db.execute("UPDATE checkpoints SET status = ? WHERE id = ?", [status, checkpoint_id])


def last_distilled_until(db: sqlite_utils.Database, model: str) -> float | None:
    """End of the data window of `model`'s newest distilled checkpoint still in play.

    Only published adapters that are candidates or promoted count: a rejected run or a rolled-back
    checkpoint gave nothing lasting, so its window is distilled again; a reward model is trained
    on feedback, not on a window of the log, so it never moves it.
    """
    row = db.execute(
        "SELECT MAX(data_until) FROM checkpoints WHERE model = ? AND status IN (?, ?) AND method IS NOT ?",
        [model, CheckpointStatus.CANDIDATE, CheckpointStatus.PROMOTED, REWARD_MODEL_METHOD]).fetchone()
    return row[0] if row and row[0] is not None else None


def newest_published_adapter(db: sqlite_utils.Database) -> str | None:
    """The id of the newest distilled adapter the gate published (it has weights), whatever became of
    it since (a demo's may have been rolled back); None when there is none."""
    row = db.execute("SELECT id FROM checkpoints WHERE path IS NOT NULL AND method IS NOT ? "
                     "ORDER BY created_at DESC LIMIT 1", [REWARD_MODEL_METHOD]).fetchone()
    return row[0] if row else None


def unstarted_candidate(db: sqlite_utils.Database, model: str) -> Checkpoint | None:
    """`model`'s newest published adapter that no rollout has taken up: still a candidate, and newer
    than the model's last rollout event (an older one was passed over by a decision since)."""
    row = db.execute(
        "SELECT id FROM checkpoints WHERE model = ? AND status = ? AND path IS NOT NULL AND method IS NOT ? "
        "AND created_at > COALESCE((SELECT MAX(created_at) FROM rollout_events WHERE model = ?), 0) "
        "ORDER BY created_at DESC LIMIT 1",
        [model, CheckpointStatus.CANDIDATE, REWARD_MODEL_METHOD, model]).fetchone()
    return get_checkpoint(db, row[0]) if row else None
