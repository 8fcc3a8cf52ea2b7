"""Which registered checkpoints may be rolled out, and the error that says why one may not."""

from __future__ import annotations

import sqlite_utils

from gateway.errors import APIError
from gateway.store import Checkpoint, CheckpointStatus, get_checkpoint


def servable_checkpoint(db: sqlite_utils.Database, checkpoint_id: str, force: bool) -> Checkpoint:
    """The registered checkpoint, if it is an adapter with files that the gate did not refuse (unless
    forced); else the APIError that says why not."""
    found = get_checkpoint(db, checkpoint_id)
    if found is None:
        raise APIError(404, f"checkpoint {checkpoint_id!r} is not registered (see `tao distill`)",
                       type="not_found_error", param="checkpoint", code="checkpoint_not_found")
    if found.is_reward_model:
        raise APIError(400, f"checkpoint {checkpoint_id} is a reward model (from `tao reward train`): it scores "
                       f"replies (reward: {{kind: hf, path: {found.path}}}) and cannot serve them",
                       param="checkpoint", code="not_servable")
    if not found.path:
        raise APIError(400, f"checkpoint {checkpoint_id} has no files (status {found.status})", param="checkpoint")
    if found.status in (CheckpointStatus.REJECTED, CheckpointStatus.RETIRED) and not force:
        raise APIError(409, f"checkpoint {checkpoint_id} is {found.status}; start it anyway with \"force\": true",
                       param="checkpoint", code="checkpoint_not_candidate")
    return found
