import json
import time
from pathlib import Path

import sqlite_utils

from gateway.store import RequestLog, Store, open_database, prune
from tests.waiting import wait_until


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
    store = Store(tmp_path / "tao.db", flush_interval_s=0.01, busy_timeout_s=0.05,
                  on_write_error=lambda: errors.append(1))
    blocker = open_database(tmp_path / "tao.db")
    blocker.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
    store.start()
    for i in range(3):
        store.log(record(i))
    wait_until(lambda: len(errors) >= 3, "the writer did not retry", timeout_s=10)
    health = store.health()
    assert not health.ok and "locked" in health.reason and health.queue_depth == 3
    blocker.execute("COMMIT")
    store.close()
    with store.connection() as db:
        assert db["requests"].count == 3
    assert store.health().ok
    assert not (tmp_path / "tao.db.unwritten.jsonl").exists()


def test_records_the_database_refuses_at_shutdown_are_spilled_then_imported_at_the_next_start(tmp_path: Path):
    store = Store(tmp_path / "tao.db", flush_interval_s=0.01, busy_timeout_s=0.05, shutdown_timeout_s=0.5)
    blocker = open_database(tmp_path / "tao.db")
    blocker.execute("BEGIN EXCLUSIVE")
    store.start()
    for i in range(3):
        store.log(record(i))
    started = time.monotonic()
    store.close()
    assert time.monotonic() - started < 5  # bounded, whatever the database does
    spill = tmp_path / "tao.db.unwritten.jsonl"
    spilled = [json.loads(line) for line in spill.read_text().splitlines()]
    assert sorted(r["request"]["id"] for r in spilled) == ["r0", "r1", "r2"]
    assert all(len(r["candidates"]) == 2 for r in spilled)
    blocker.execute("COMMIT")

    again = Store(tmp_path / "tao.db", flush_interval_s=0.01)
    again.start()
    again.log(record(3))
    again.close()
    with again.connection() as db:
        assert sorted(r["id"] for r in db["requests"].rows) == ["r0", "r1", "r2", "r3"]
        assert db["candidates"].count == 8
    assert not spill.exists() and not list(tmp_path.glob("*.importing"))


def test_importing_a_spill_twice_keeps_one_copy_and_unreadable_lines_are_kept_aside(tmp_path: Path):
    store = Store(tmp_path / "tao.db", flush_interval_s=0.01)
    store.start()
    store.log(record(0))
    store.close()  # r0 is committed; a crash at the deadline may also have spilled it
    spill = tmp_path / "tao.db.unwritten.jsonl"
    line = json.dumps({"request": record(0).request, "candidates": record(0).candidates})
    spill.write_text(line + "\n" + '{"request": {"id": "r1", "crea' + "\n")  # a write cut by a crash
    store.start()
    store.close()
    with store.connection() as db:
        assert db["requests"].count == 1 and db["candidates"].count == 2
    assert (tmp_path / "tao.db.unwritten.jsonl.bad").read_text().startswith('{"request": {"id": "r1"')


def test_a_record_the_database_cannot_take_does_not_block_the_others(tmp_path: Path):
    store = Store(tmp_path / "tao.db", flush_interval_s=0.01)
    open_database(tmp_path / "tao.db").execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON requests WHEN NEW.id = 'r1' BEGIN SELECT RAISE(ABORT, 'no'); END")
    store.start()
    for i in range(3):
        store.log(record(i))
    store.close()
    with store.connection() as db:
        assert sorted(r["id"] for r in db["requests"].rows) == ["r0", "r2"]
    [kept] = [json.loads(line) for line in (tmp_path / "tao.db.unwritten.jsonl").read_text().splitlines()]
    assert kept["request"]["id"] == "r1"


def test_a_long_reader_does_not_leave_the_wal_large(tmp_path: Path):
    store = Store(tmp_path / "tao.db", flush_interval_s=0.01, journal_size_limit_mb=0)
    store.start()
    reader = open_database(tmp_path / "tao.db")
    reader.execute("BEGIN")
    reader.execute("SELECT COUNT(*) FROM requests").fetchone()  # holds a snapshot: no checkpoint can finish
    for i in range(2000):
        store.log(record(i))
    wait_until_written(store)
    wal = tmp_path / "tao.db-wal"
    grown = wal.stat().st_size
    assert grown > 200_000
    reader.execute("COMMIT")
    for i in range(2000, 2010):  # the next writes after the reader is gone reset the WAL
        store.log(record(i))
    wait_until_written(store)
    with store.connection() as db:
        prune(db, before=0)  # TRUNCATE checkpoint, as the writer's hourly retention and `tao logs prune` do
    assert wal.stat().st_size < grown / 10
    store.close()


def test_prune_deletes_old_requests_with_their_candidates_and_feedback(tmp_path: Path):
    store = Store(tmp_path / "tao.db", flush_interval_s=0.01)
    store.start()
    old, new = record(0), record(1)
    old.request["created_at"] = time.time() - 40 * 86400
    store.log(old)
    store.log(new)
    store.close()
    store.record_feedback({"request_id": "r0", "user": "u", "created_at": time.time(), "kind": "rating",
                           "rating": 1.0})
    with store.connection() as db:
        pruned = prune(db, before=time.time() - 30 * 86400)
        assert (pruned.requests, pruned.candidates, pruned.feedback) == (1, 2, 1)
        assert [r["id"] for r in db["requests"].rows] == ["r1"] and db["candidates"].count == 2
        assert db["feedback"].count == 0


def wait_until_written(store: Store, timeout_s: float = 30.0) -> None:
    wait_until(lambda: not store.queue_depth(), lambda: f"{store.queue_depth()} records still queued", timeout_s)


def test_the_writer_applies_retention_days(tmp_path: Path):
    store = Store(tmp_path / "tao.db", flush_interval_s=0.01)
    store.start()
    old = record(0)
    old.request["created_at"] = time.time() - 40 * 86400
    store.log(old)
    store.log(record(1))
    store.close()
    keeping = Store(tmp_path / "tao.db", flush_interval_s=0.01, retention_days=30)
    keeping.start()
    with keeping.connection() as db:
        wait_until(lambda: db["requests"].count == 1, "retention was not applied", timeout_s=10)
        assert [r["id"] for r in db["requests"].rows] == ["r1"] and db["candidates"].count == 2
    keeping.close()



def scored(rid: str, score: float | None) -> RequestLog:
    return RequestLog(request={"id": rid, "created_at": time.time(), "model": "m", "status": "ok", "best_of": 1},
                      candidates=[{"request_id": rid, "idx": 0, "text": "an answer", "score": score, "won": 1}])


def test_a_killed_process_journal_is_replayed_last_version_kept_and_a_live_one_is_left_alone(tmp_path: Path):
    """A process killed before its writer committed anything: its journal is all that is left (its
    files stay; the kernel releases its lock). The next Store on the database replays it, keeping
    the last version of a record journalled twice (sent unscored, then scored), and never touches
    the journal of a process still running."""
    db = tmp_path / "tao.db"
    dead = Store(db)
    dead.writer.journal.open()  # its writer thread never runs: nothing is committed
    dead.journal_only(scored("r1", None))
    dead.log(scored("r1", 0.75))
    dead.log(scored("r2", 0.5))
    dead.writer.journal.close(keep=True)

    live = Store(db, flush_interval_s=0.01)
    live.start()
    survivor = Store(db, flush_interval_s=0.01)
    survivor.start()
    wait_until(lambda: ids(db) == {"r1", "r2"}, "the dead process's journal was not replayed")
    with survivor.connection() as conn:
        assert conn.execute("select score from candidates where request_id = 'r1'").fetchone()[0] == 0.75
    journal = db.with_name(db.name + ".journal")
    owners = {p.name.split(".")[0] for p in journal.iterdir()}
    assert dead.writer.journal.owner not in owners and live.writer.journal.owner in owners
    live.close()
    survivor.close()
    assert not list(journal.iterdir())


def test_the_journal_is_truncated_once_its_records_are_committed(tmp_path: Path):
    db = tmp_path / "tao.db"
    store = Store(db, flush_interval_s=0.01)
    store.start()
    for i in range(50):
        store.log(record(i))
    wait_until(lambda: store.queue_depth() == 0, "the records were not written")
    [segment] = db.with_name(db.name + ".journal").glob("*.jsonl")
    wait_until(lambda: segment.stat().st_size == 0, "the journal kept committed records")
    store.close()


def ids(db: Path) -> set[str]:
    return {row["id"] for row in sqlite_utils.Database(db)["requests"].rows}


def test_a_lease_passes_to_another_holder_only_when_released_or_expired(tmp_path: Path):
    from gateway.store import hold_lease, release_lease

    db = tmp_path / "tao.db"
    Store(db)
    assert hold_lease(db, "decider", "a", ttl_s=60) and hold_lease(db, "decider", "a", ttl_s=60)  # taken, renewed
    assert not hold_lease(db, "decider", "b", ttl_s=60)
    release_lease(db, "decider", "a")  # a clean stop
    assert hold_lease(db, "decider", "b", ttl_s=2.0)
    # b dies without releasing: a takes over once b's lease has run out, not before
    assert not hold_lease(db, "decider", "a", ttl_s=60)
    wait_until(lambda: hold_lease(db, "decider", "a", ttl_s=60), "the expired lease was not taken over", timeout_s=10)
    assert not hold_lease(db, "decider", "b", ttl_s=2.0)
