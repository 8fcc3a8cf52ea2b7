"""Publishing: a checkpoint appears whole or not at all, and is registered in the store.

Training writes into `<checkpoints>/.staging-<id>/`; publishing fsyncs every file, renames the
directory to `<checkpoints>/<id>/` (atomic on one filesystem) and then inserts the `checkpoints`
row. A run killed at any point leaves at most a staging directory, which the next run removes,
and never a registered checkpoint without its files. `tao reward train` publishes its reward
models the same way (`move_into_place`).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import sqlite_utils

from gateway.store import Checkpoint, CheckpointStatus, register_checkpoint

STAGING_PREFIX = ".staging-"


def new_checkpoint_id(model: str, method: str) -> str:
    return f"{model}-{method}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:6]}"


def staging_dir(checkpoints_dir: Path, checkpoint_id: str) -> Path:
    path = checkpoints_dir / f"{STAGING_PREFIX}{checkpoint_id}"
    path.mkdir(parents=True, exist_ok=False)
    return path


def remove_stale_staging(checkpoints_dir: Path) -> list[Path]:
    """Staging directories left by killed runs (call only while holding the distill lock)."""
    stale = sorted(checkpoints_dir.glob(f"{STAGING_PREFIX}*")) if checkpoints_dir.is_dir() else []
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            with open(Path(dirpath) / name, "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(Path(dirpath))


def move_into_place(staging: Path, parent: Path, name: str) -> Path:
    """Drop the trainer's scratch, fsync the staged tree, rename it to `parent/name` in one step and
    fsync `parent`, so that after a crash the directory is either whole or absent."""
    shutil.rmtree(staging / "trainer", ignore_errors=True)
    _fsync_tree(staging)
    final = parent / name
    os.rename(staging, final)
    _fsync_dir(parent)
    return final


def publish(staging: Path, checkpoints_dir: Path, checkpoint_id: str, metadata: dict[str, Any],
            merge_base: Path | None = None) -> Path:
    """Move the staged adapter into place atomically; optionally write merged full weights too."""
    adapter = staging / "adapter"
    (adapter / "tao_checkpoint.json").write_text(json.dumps(metadata, indent=2, default=str))
    if merge_base is not None:
        merge_adapter(merge_base, adapter, staging / "merged")
    return move_into_place(staging, checkpoints_dir, checkpoint_id)


def merge_adapter(base_dir: Path, adapter: Path, out_dir: Path) -> Path:
    """Full weights with the LoRA folded in (and the adapter's tokenizer) at `out_dir`: a model that
    loads without PEFT and generates without the adapter's extra matmuls."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), adapter).merge_and_unload()
    merged.save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(adapter).save_pretrained(out_dir)
    return out_dir


def register(db: sqlite_utils.Database, row: Mapping[str, Any]) -> Checkpoint:
    """Register a checkpoint from a row of `checkpoints` columns (metrics as a dict); returns it typed."""
    checkpoint = Checkpoint(**{**row, "status": CheckpointStatus(row["status"]), "metrics": row.get("metrics") or {}})
    register_checkpoint(db, checkpoint)
    return checkpoint
