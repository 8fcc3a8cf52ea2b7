"""Writing a person's verdict on a reply: rare and small, so written directly, not through the writer."""

from __future__ import annotations

from typing import Any

import sqlite_utils


def record_feedback(db: sqlite_utils.Database, row: dict[str, Any]) -> None:
    """Upsert one verdict (keyed by request and user)."""
    db["feedback"].insert(row, replace=True)
