"""The log never loses an acknowledged record: whatever the database does when the gateway is told
to stop, every request a client got a 200 for is in the database, or in the spill file that the
next start imports. Real processes: `tao serve` as a child, SIGTERM, a competing process on the
SQLite file, a file-size limit for a full disk."""

import json
import resource
import threading
from pathlib import Path

import httpx
import pytest
import sqlite_utils

from gateway.store import Store, open_database
from tests.fake_upstream import FakeConfig, FakeUpstream
from tests.gateway_process import GatewayProcess, mock_config
from tests.servers import running
from tests.waiting import wait_until


@pytest.fixture
def upstream_url():
    with running(FakeUpstream(FakeConfig(texts=["One short answer.", "Another answer, longer than that."]))) as url:
        yield url


def logged_ids(db: Path) -> set[str]:
    return {row["id"] for row in sqlite_utils.Database(db)["requests"].rows}


def spilled_ids(db: Path) -> set[str]:
    spill = db.with_name(db.name + ".unwritten.jsonl")
    return {json.loads(line)["request"]["id"] for line in spill.read_text().splitlines()} if spill.exists() else set()


def restart_and_check_everything_is_logged(config: Path, db: Path, acknowledged: set[str]) -> None:
    """Start again on a healthy disk: the spill file is imported without anyone asking."""
    again = GatewayProcess(config)
    spill = db.with_name(db.name + ".unwritten.jsonl")
    again.wait_until(lambda: not spill.exists() and not list(db.parent.glob("*.importing")),
                     "the spill file was not imported")
    again.terminate()
    assert acknowledged <= logged_ids(db)
    assert "imported" in again.output


def locked_after_20_written(tmp_path: Path, upstream_url: str):
    """A gateway that has written 20 requests, then another process holding the database's lock:
    (db, config, gateway, the 20 acknowledged ids, the locking connection)."""
    db = tmp_path / "tao.db"
    config = mock_config(tmp_path / "tao.yaml", upstream_url, db)
    gw = GatewayProcess(config)
    acknowledged = set(gw.ask(20))
    gw.wait_until(lambda: gw.health()["store_queue_depth"] == 0, "the first requests were not written")
    locker = open_database(db)
    locker.execute("BEGIN EXCLUSIVE")
    return db, config, gw, acknowledged, locker


def test_sigterm_while_another_process_locks_the_database(tmp_path: Path, upstream_url: str):
    db, config, gw, acknowledged, locker = locked_after_20_written(tmp_path, upstream_url)
    acknowledged |= set(gw.ask(50))
    gw.wait_until(lambda: gw._health_status() == 503, "health did not report the failing log")
    assert "locked" in gw.health()["reason"]
    output = gw.terminate()  # with the lock still held: shutdown may not wait for it
    assert len(acknowledged) == 70
    assert "50 were not" in output and "unwritten.jsonl" in output
    locker.execute("COMMIT")
    assert acknowledged == logged_ids(db) | spilled_ids(db)
    restart_and_check_everything_is_logged(config, db, acknowledged)


def test_sigterm_while_the_writer_is_behind(tmp_path: Path, upstream_url: str):
    """Slow storage, as the gateway sees it: a competing writer holds the lock most of the time, so
    commits are rare and the queue grows; it keeps the lock through the shutdown."""
    db = tmp_path / "tao.db"
    config = mock_config(tmp_path / "tao.yaml", upstream_url, db)
    gw = GatewayProcess(config)
    shutting_down, stop, holding = threading.Event(), threading.Event(), threading.Event()

    def hog() -> None:
        hog_db = open_database(db)
        while not shutting_down.is_set():
            hog_db.execute("BEGIN EXCLUSIVE")
            holding.set()
            if shutting_down.wait(0.4):
                break
            hog_db.execute("COMMIT")
            holding.clear()
            shutting_down.wait(0.01)
        if not holding.is_set():
            hog_db.execute("BEGIN EXCLUSIVE")
            holding.set()
        stop.wait()  # hold on until the gateway has exited
        hog_db.execute("COMMIT")
        hog_db.close()

    thread = threading.Thread(target=hog, daemon=True)
    thread.start()
    acknowledged = set(gw.ask(180))
    shutting_down.set()
    gw.wait_until(holding.is_set, "the hog did not take the lock")
    # The writer may have caught up in the hog's last gap; these 20 cannot be committed, so the
    # shutdown always finds a backlog. Wait until every answered request is committed or queued.
    acknowledged |= set(gw.ask(20))
    gw.wait_until(lambda: gw.health()["store_queue_depth"] == len(acknowledged - logged_ids(db)),
                  "answered requests were neither committed nor queued")
    behind = gw.health()["store_queue_depth"]
    assert behind >= 20
    output = gw.terminate()
    committed = logged_ids(db)
    stop.set()
    thread.join()
    assert len(acknowledged) == 200 and f"{behind} were not" in output
    assert acknowledged == committed | spilled_ids(db) and len(committed) == 200 - behind
    restart_and_check_everything_is_logged(config, db, acknowledged)


def test_a_full_disk_turns_health_red_and_loses_nothing(tmp_path: Path, upstream_url: str):
    db = tmp_path / "tao.db"
    Store(db)  # the schema exists before the limit applies
    config = mock_config(tmp_path / "tao.yaml", upstream_url, db)
    limit = db.stat().st_size + 256 * 1024

    def small_disk() -> None:  # no file of this process may grow past `limit` bytes
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    gw = GatewayProcess(config, preexec=small_disk)
    acknowledged: set[str] = set()
    for _ in range(40):  # until the log's files reach the limit
        acknowledged |= set(gw.ask(25))
        if gw._health_status() == 503:
            break
    health = gw.health()
    # SQLite reports a file-size limit as "disk I/O error", a full file system as "database or disk is full".
    assert health["status"] == "unavailable" and "disk" in health["reason"], health
    acknowledged |= set(gw.ask(10))
    gw.terminate()
    assert acknowledged <= logged_ids(db) | spilled_ids(db)
    assert spilled_ids(db)
    restart_and_check_everything_is_logged(config, db, acknowledged)


def test_at_the_queue_bound_new_requests_get_503_and_nothing_accepted_is_lost(gateway):
    with gateway(store={"max_queue": 5, "busy_timeout_s": 0.05}) as gw:
        locker = open_database(gw.db_path)
        locker.execute("BEGIN EXCLUSIVE")
        accepted, refused = [], []
        for i in range(8):
            reply = httpx.post(gw.url + "/v1/chat/completions",
                               json={"model": "mock", "messages": [{"role": "user", "content": f"q{i}"}]})
            (accepted if reply.status_code == 200 else refused).append(reply)
        assert len(accepted) == 5 and len(refused) == 3
        assert all(r.status_code == 503 and r.headers["retry-after"] == "1" and
                   r.json()["error"]["code"] == "store_backlogged" for r in refused)
        health = httpx.get(gw.url + "/healthz")
        assert health.status_code == 503 and "queue full" in health.json()["reason"]
        locker.execute("COMMIT")
        rows = gw.wait_for_rows(5)
        assert {r["id"] for r in rows} == {r.json()["tao"]["request_id"] for r in accepted}
        wait_until(lambda: httpx.get(gw.url + "/healthz").status_code == 200,
                   "health did not recover once the log caught up", timeout_s=10)


def journal_segments(db: Path) -> list[Path]:
    return sorted(db.with_name(db.name + ".journal").glob("*.jsonl"))


def test_sigkill_loses_nothing_acknowledged_even_with_the_database_locked(tmp_path: Path, upstream_url: str):
    """SIGKILL runs no shutdown and no spill: what the writer had not committed survives only in the
    journal. Here none of it can be committed (another process holds the lock until the kill)."""
    db, config, gw, acknowledged, locker = locked_after_20_written(tmp_path, upstream_url)
    unwritten = set(gw.ask(50))
    gw.wait_until(lambda: gw.health()["store_queue_depth"] == 50, "the answered requests were not all queued")
    gw.proc.kill()
    gw.proc.wait(30)
    locker.execute("COMMIT")
    assert len(acknowledged | unwritten) == 70 and not unwritten & logged_ids(db)
    assert journal_segments(db) and not db.with_name(db.name + ".unwritten.jsonl").exists()

    again = GatewayProcess(config)
    again.wait_until(lambda: unwritten <= logged_ids(db), "the journal was not replayed")
    again.wait_until(lambda: not any(p.stat().st_size for p in journal_segments(db)), "the journal was not cleared")
    output = again.terminate()
    assert "replayed 50 records" in output
    rows = sqlite_utils.Database(db)
    assert logged_ids(db) == acknowledged | unwritten and rows["requests"].count == 70  # each exactly once
    assert rows["candidates"].count == 70 * 4
    assert not journal_segments(db)  # a clean stop leaves no journal behind


def test_workers_share_the_port_and_the_log_and_each_keeps_its_journal(tmp_path: Path, upstream_url: str):
    """`tao serve --workers 2`: two processes behind one port, one store; every answered request is
    logged once, and a SIGTERM flushes both (no journal left behind)."""
    db = tmp_path / "tao.db"
    gw = GatewayProcess(mock_config(tmp_path / "tao.yaml", upstream_url, db), workers=2)
    journal = db.with_name(db.name + ".journal")
    gw.wait_until(lambda: len(list(journal.glob("*.lock"))) == 2, "two workers did not each open a journal")
    acknowledged = set(gw.ask(60))
    assert len(acknowledged) == 60
    gw.wait_until(lambda: acknowledged <= logged_ids(db), "not every answered request was logged")
    gw.terminate()
    assert sqlite_utils.Database(db)["requests"].count == 60 and not list(journal.glob("*"))
