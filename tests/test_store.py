import json
import time
from pathlib import Path

import sqlite_utils

from gateway.store import RequestLog, Store, open_database


def record(i: int) -> RequestLog:
    rid = f"r{i}"
    return RequestLog(
        request={"id": rid, "created_at": time.time(), "model": "m", "status": "ok", "best_of": 2},
        candidates=[{"request_id": rid, "idx": k, "text": f"c{k}", "score": float(k), "won": int(k == 1)}
                    for k in range(2)],
    )


def test_schema_is_plain_sqlite_in_wal_mode(tmp_path: Path):
    Store(tmp_path / "tao.db")
    db = sqlite_utils.Database(tmp_path / "tao.db")
    assert {"requests", "candidates", "feedback", "checkpoints", "rollout_events"} <= set(db.table_names())
    assert db.journal_mode == "wal"
    assert {"score", "won", "text", "finish_reason"} <= set(db["candidates"].columns_dict)


def test_records_are_batched_and_everything_is_flushed_on_close(tmp_path: Path):
    written: list[int] = []
    store = Store(tmp_path / "tao.db", batch_size=50, flush_interval_s=0.01, on_written=written.append)
    store.start()
    for i in range(500):
        store.log(record(i))
    store.close()
    with store.connection() as db:
        assert db["requests"].count == 500 and db["candidates"].count == 1000
    assert sum(written) == 500 and max(written) <= 50 and len(written) >= 10


def test_failing_writes_are_retried_and_counted_until_they_succeed(tmp_path: Path):
    errors: list[int] = []
    store = Store(tmp_path / "tao.db", flush_interval_s=0.01, max_retries=1, on_write_error=lambda: errors.append(1))
    blocker = open_database(tmp_path / "tao.db")
    blocker.execute("CREATE TRIGGER refuse BEFORE INSERT ON requests BEGIN SELECT RAISE(ABORT, 'disk says no'); END")
    store.start()
    for i in range(3):
        store.log(record(i))
    deadline = time.monotonic() + 10
    while len(errors) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(errors) >= 4  # several rounds of retries failed, the records were kept
    blocker.execute("DROP TRIGGER refuse")
    store.close()
    with store.connection() as db:
        assert db["requests"].count == 3
    assert not (tmp_path / "tao.db.unwritten.jsonl").exists()


def test_records_the_database_refuses_at_shutdown_are_spilled_not_lost(tmp_path: Path):
    store = Store(tmp_path / "tao.db", flush_interval_s=0.01, max_retries=0)
    open_database(tmp_path / "tao.db").execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON requests BEGIN SELECT RAISE(ABORT, 'disk says no'); END")
    store.start()
    for i in range(3):
        store.log(record(i))
    store.close()
    spilled = [json.loads(line) for line in (tmp_path / "tao.db.unwritten.jsonl").read_text().splitlines()]
    assert sorted(r["request"]["id"] for r in spilled) == ["r0", "r1", "r2"]
    assert all(len(r["candidates"]) == 2 for r in spilled)
