"""Rollout state (`rollouts`, one row per public model) and its history (`rollout_events`)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import sqlite_utils

from gateway.store.schema import RolloutState


@dataclass
class Rollout:
    """One `rollouts` row: where a model's rollout of a checkpoint stands."""

    model: str
    checkpoint_id: str
    adapter_path: str
    state: RolloutState
    share: float  # percent of traffic on the candidate arm
    candidate_best_of: int
    incumbent_best_of: int  # N the incumbent arm serves at
    started_at: float
    step_started_at: float  # when the current share began
    updated_at: float
    looks: int = 0  # looks the policy has taken at the shadow pairs (see gateway.sequential)
    # The incumbent while this checkpoint is a canary: a promoted checkpoint it would replace (served at
    # incumbent_best_of on the incumbent arm, restored by a rollback), or None for the base weights.
    incumbent_checkpoint_id: str | None = None
    incumbent_adapter_path: str | None = None

    @property
    def active(self) -> bool:
        """Canary or promoted: the checkpoint serves traffic."""
        return self.state in (RolloutState.CANARY, RolloutState.PROMOTED)


@dataclass(frozen=True)
class RolloutEvent:
    """One `rollout_events` row (details decoded)."""

    id: int
    created_at: float
    model: str
    event: str
    checkpoint_id: str
    share: float
    details: dict[str, Any]


def _rollout(row: dict[str, Any]) -> Rollout:
    return Rollout(**{**row, "state": RolloutState(row["state"]), "looks": row.get("looks") or 0})


def active_rollouts(db: sqlite_utils.Database) -> list[Rollout]:
    """Rollouts that serve traffic (canary or promoted): what a restarted gateway resumes."""
    return [_rollout(row) for row in db["rollouts"].rows_where(
        "state IN (?, ?)", [RolloutState.CANARY, RolloutState.PROMOTED])]


def get_rollout(db: sqlite_utils.Database, model: str) -> Rollout | None:
    """The latest rollout of `model`, in whatever state, or None if it never had one."""
    rows = list(db["rollouts"].rows_where("model = ?", [model]))
    return _rollout(rows[0]) if rows else None


@dataclass(frozen=True)
class Incumbent:
    """A promoted checkpoint that serves a model: what its next candidate is trained from and judged against."""

    checkpoint_id: str
    adapter_path: str


def promoted_incumbent(db: sqlite_utils.Database, model: str) -> Incumbent | None:
    """The promoted checkpoint serving `model` (also while a canary would replace it); None when the
    base weights serve it."""
    rollout = get_rollout(db, model)
    if rollout is None:
        return None
    if rollout.state == RolloutState.PROMOTED:
        return Incumbent(rollout.checkpoint_id, rollout.adapter_path)
    if rollout.state == RolloutState.CANARY and rollout.incumbent_checkpoint_id:
        return Incumbent(rollout.incumbent_checkpoint_id, rollout.incumbent_adapter_path)
    return None


def save_rollout(db: sqlite_utils.Database, rollout: Rollout, event: str, details: dict[str, Any]) -> None:
    """Store the rollout's new state and append the event that led to it (at `rollout.updated_at`)."""
    db["rollouts"].insert(asdict(rollout), replace=True)
    db["rollout_events"].insert({"created_at": rollout.updated_at, "model": rollout.model, "event": event,
                                 "checkpoint_id": rollout.checkpoint_id, "share": rollout.share,
                                 "details": json.dumps(details, default=str)})


def rollout_events(db: sqlite_utils.Database, model: str) -> list[RolloutEvent]:
    """`model`'s rollout history, oldest first."""
    return [RolloutEvent(**{**row, "details": json.loads(row["details"] or "{}")})
            for row in db["rollout_events"].rows_where("model = ?", [model], order_by="id")]
