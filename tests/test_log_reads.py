"""The store's reads, registry and rollout state against real SQLite files written by the real writer."""

import json
import sqlite3
from pathlib import Path

import pytest
import sqlite_utils

from gateway.store import (
    REWARD_MODEL_METHOD,
    Arm,
    Checkpoint,
    CheckpointStatus,
    FeedbackKind,
    RequestLog,
    RequestStatus,
    Rollout,
    RolloutState,
    Store,
    active_rollouts,
    arm_outcomes,
    best_of_n_candidates,
    candidate_count_and_winner,
    connection,
    ensure_schema,
    feedback_verdicts,
    get_checkpoint,
    get_rollout,
    last_distilled_until,
    register_checkpoint,
    rollout_events,
    save_rollout,
    scored_chat_candidates,
    served_replies,
    set_checkpoint_status,
)


def request(rid: str, at: float, *, model: str = "m", arm: Arm = Arm.BASE, status: RequestStatus = RequestStatus.OK,
            endpoint: str = "chat", best_of: int = 2, scores: list[float | None] | None = None, tokens: int = 10,
            content: str | None = None) -> RequestLog:
    """A logged request whose candidate `k` says `<rid>-<k>`; the highest score wins."""
    scores = [0.2, 0.8] if scores is None else scores
    known = [s for s in scores if s is not None]
    winner = scores.index(max(known)) if known else None
    messages = [{"role": "user", "content": content or f"question {rid}"}]
    return RequestLog(
        request={"id": rid, "created_at": at, "model": model, "arm": arm, "endpoint": endpoint, "status": status,
                 "messages": json.dumps(messages), "prompt": messages[0]["content"], "best_of": best_of,
                 "completion_tokens": tokens, "winner_index": winner, "n_generated": len(scores)},
        candidates=[{"request_id": rid, "idx": k, "text": f"{rid}-{k}", "score": s, "won": int(k == winner),
                     "tokens": tokens // len(scores), "finish_reason": "stop" if k else "length"}
                    for k, s in enumerate(scores)])


def write(path: Path, *records: RequestLog) -> Store:
    store = Store(path, flush_interval_s=0.01)
    store.start()
    for record in records:
        store.log(record)
    store.close()
    return store


def checkpoint(cid: str, until: float | None, *, model: str = "m", method: str = "dpo",
               status: CheckpointStatus = CheckpointStatus.CANDIDATE) -> Checkpoint:
    return Checkpoint(id=cid, created_at=until or 0.0, model=model, base_model="base", method=method, data_since=None,
                      data_until=until, metrics={"eval": {"new_n1": 0.5}}, path=f"/ckpt/{cid}", status=status)


def test_scored_chat_candidates_are_the_base_arms_best_of_n_in_the_window_oldest_first(tmp_path: Path):
    store = write(
        tmp_path / "tao.db",
        request("late", 30.0),
        request("early", 10.0, scores=[0.5, None, 0.9]),
        request("other-model", 11.0, model="other"),
        request("failed", 12.0, status=RequestStatus.ERROR),
        request("degraded", 13.0, status=RequestStatus.DEGRADED, scores=[None, None]),
        request("completion", 14.0, endpoint="completion"),
        request("single", 15.0, best_of=1, scores=[0.3]),  # N=1: its only candidate "won" nothing
        request("shadow", 16.0, arm=Arm.SHADOW),  # the adapter's own replies are never training data
        request("candidate", 17.0, arm=Arm.CANDIDATE),
        request("too-late", 40.0),
    )
    with store.connection() as db:
        rows = scored_chat_candidates(db, "m", since=10.0, until=40.0)
        assert scored_chat_candidates(db, "m", since=10.5, until=40.0) == rows[2:]
    assert [(r.request_id, r.idx, r.score, r.won) for r in rows] == [
        ("early", 0, 0.5, False), ("early", 2, 0.9, True), ("late", 0, 0.2, False), ("late", 1, 0.8, True)]
    assert rows[0].messages == [{"role": "user", "content": "question early"}]
    assert rows[0].prompt == "question early" and rows[0].text == "early-0" and rows[0].completion_tokens == 10
    assert (rows[0].finish_reason, rows[1].finish_reason, rows[1].tokens) == ("length", "stop", 3)


def test_arm_outcomes_count_errors_and_take_the_winners_rewards_of_ok_replies(tmp_path: Path):
    store = write(
        tmp_path / "tao.db",
        request("b1", 10.0, scores=[0.1, 0.7], tokens=40),
        request("b2", 11.0, scores=[0.3, 0.5], tokens=20),
        request("before-the-step", 1.0, scores=[0.0, 0.0]),
        request("c1", 12.0, arm=Arm.CANDIDATE, best_of=1, scores=[0.9], tokens=8),
        request("s1", 13.0, arm=Arm.SHADOW, best_of=1, scores=[0.4], tokens=6),
        request("c-error", 14.0, arm=Arm.CANDIDATE, best_of=1, status=RequestStatus.ERROR, scores=[], tokens=0),
        request("c-degraded", 15.0, arm=Arm.CANDIDATE, best_of=1, status=RequestStatus.DEGRADED, scores=[None]),
    )
    with store.connection() as db:
        base = arm_outcomes(db, "m", [Arm.BASE], since=5.0)
        checkpoint_arms = arm_outcomes(db, "m", [Arm.CANDIDATE, Arm.SHADOW], since=5.0)
        nothing = arm_outcomes(db, "m", [Arm.PROMOTED], since=0.0)
    assert (base.requests, base.errors, base.tokens_per_request, sorted(base.rewards)) == (2, 0, 30.0, [0.5, 0.7])
    assert (checkpoint_arms.requests, checkpoint_arms.errors) == (4, 1)
    assert sorted(checkpoint_arms.rewards) == [0.4, 0.9]
    assert (nothing.requests, nothing.errors, nothing.tokens_per_request, nothing.rewards) == (0, 0, 0.0, [])


def test_feedback_verdicts_carry_their_request_in_the_order_they_were_written(tmp_path: Path):
    store = write(tmp_path / "tao.db", request("r1", 1.0, scores=[0.1, 0.2, 0.3]))
    store.record_feedback({"request_id": "r1", "user": "a", "created_at": 2.0, "kind": FeedbackKind.PAIRWISE,
                           "candidate_index": 2, "rejected_index": 0})
    store.record_feedback({"request_id": "gone", "user": "a", "created_at": 3.0, "kind": FeedbackKind.RATING,
                           "candidate_index": 0, "rating": 0.9})
    store.record_feedback({"request_id": "r1", "user": "b", "created_at": 4.0, "kind": FeedbackKind.PREFERENCE,
                           "candidate_index": 1})
    with store.connection() as db:
        verdicts = feedback_verdicts(db)
    assert [(v.request_id, v.kind, v.candidate_index, v.rejected_index, v.rating) for v in verdicts] == [
        ("r1", "pairwise", 2, 0, None), ("gone", "rating", 0, None, 0.9), ("r1", "preference", 1, None, None)]
    assert verdicts[0].texts == ["r1-0", "r1-1", "r1-2"]
    assert verdicts[0].messages == [{"role": "user", "content": "question r1"}]
    assert verdicts[1].messages == [] and verdicts[1].texts == []


def test_best_of_n_candidates_are_the_incumbents_ok_best_of_n_requests(tmp_path: Path):
    store = write(
        tmp_path / "tao.db",
        request("late", 20.0, scores=[0.4, None]),
        request("early", 10.0, scores=[0.6, 0.1]),
        request("n1", 11.0, best_of=1, scores=[0.5]),
        request("candidate", 12.0, arm=Arm.CANDIDATE),
        request("failed", 13.0, status=RequestStatus.ERROR, scores=[]),
        request("other", 14.0, model="other"),
    )
    with store.connection() as db:
        every_model = best_of_n_candidates(db)
        before_20 = best_of_n_candidates(db, model="m", until=20.0)
    assert [(c.request_id, c.idx) for c in every_model] == [
        ("early", 0), ("early", 1), ("other", 0), ("other", 1), ("late", 0), ("late", 1)]
    assert [(c.request_id, c.idx, c.score, c.won, c.tokens, c.best_of) for c in before_20] == [
        ("early", 0, 0.6, True, 5, 2), ("early", 1, 0.1, False, 5, 2)]
    assert before_20[0].messages == [{"role": "user", "content": "question early"}]


def test_served_replies_are_the_scored_winners_on_the_checkpoint_arms(tmp_path: Path):
    store = write(
        tmp_path / "tao.db",
        request("p", 13.0, arm=Arm.PROMOTED, best_of=1, scores=[0.7], tokens=5),
        request("c", 11.0, arm=Arm.CANDIDATE, best_of=1, scores=[0.9], tokens=7),
        request("unscored", 12.0, arm=Arm.SHADOW, best_of=1, status=RequestStatus.DEGRADED, scores=[None]),
        request("b", 10.0),
    )
    with store.connection() as db:
        replies = served_replies(db, "m", [Arm.CANDIDATE, Arm.SHADOW, Arm.PROMOTED])
    assert [(r.score, r.completion_tokens) for r in replies] == [(0.9, 7), (0.7, 5)]
    assert replies[0].messages == [{"role": "user", "content": "question c"}]


def test_candidate_count_and_winner_of_a_written_request(tmp_path: Path):
    store = write(tmp_path / "tao.db", request("r", 1.0, scores=[0.9, 0.1, 0.5]))
    with store.connection() as db:
        assert candidate_count_and_winner(db, "r") == (3, 0)
        assert candidate_count_and_winner(db, "unknown") is None


def test_checkpoints_round_trip_with_their_status_and_metrics(tmp_path: Path):
    Store(tmp_path / "tao.db")
    with connection(tmp_path / "tao.db") as db:
        register_checkpoint(db, checkpoint("a", 10.0))
        set_checkpoint_status(db, "a", CheckpointStatus.PROMOTED)
        set_checkpoint_status(db, "deleted", CheckpointStatus.ROLLED_BACK)  # bookkeeping never fails a rollback
        found = get_checkpoint(db, "a")
        assert get_checkpoint(db, "missing") is None
    assert found == checkpoint("a", 10.0, status=CheckpointStatus.PROMOTED)
    assert found.status is CheckpointStatus.PROMOTED and not found.is_reward_model
    assert sqlite_utils.Database(tmp_path / "tao.db")["checkpoints"].get("a")["status"] == "promoted"  # plain text


def test_the_distill_window_ends_at_the_newest_candidate_or_promoted_distillation_of_the_model(tmp_path: Path):
    Store(tmp_path / "tao.db")
    with connection(tmp_path / "tao.db") as db:
        assert last_distilled_until(db, "m") is None
        register_checkpoint(db, checkpoint("promoted", 10.0, status=CheckpointStatus.PROMOTED))
        register_checkpoint(db, checkpoint("candidate", 20.0))
        register_checkpoint(db, checkpoint("rejected", 30.0, status=CheckpointStatus.REJECTED))
        register_checkpoint(db, checkpoint("other-model", 40.0, model="other"))
        register_checkpoint(db, checkpoint("reward-model", 50.0, method=REWARD_MODEL_METHOD))
        assert last_distilled_until(db, "m") == 20.0
        set_checkpoint_status(db, "candidate", CheckpointStatus.ROLLED_BACK)  # its window is distilled again
        assert last_distilled_until(db, "m") == 10.0
        assert get_checkpoint(db, "reward-model").is_reward_model


def test_rollout_state_and_events_round_trip(tmp_path: Path):
    Store(tmp_path / "tao.db")
    canary = Rollout(model="m", checkpoint_id="ck", adapter_path="/a", state=RolloutState.CANARY, share=10.0,
                     candidate_best_of=1, incumbent_best_of=4, started_at=1.0, step_started_at=1.0, updated_at=1.0)
    rolled_back = Rollout(**{**canary.__dict__, "state": RolloutState.ROLLED_BACK, "share": 0.0, "updated_at": 2.0})
    with connection(tmp_path / "tao.db") as db:
        assert get_rollout(db, "m") is None
        save_rollout(db, canary, "start", {"reason": "canary at 10%", "share": 10.0})
        assert get_rollout(db, "m") == canary and active_rollouts(db) == [canary] and canary.active
        save_rollout(db, rolled_back, "rollback", {"reason": "worse"})
        assert get_rollout(db, "m") == rolled_back and active_rollouts(db) == [] and not rolled_back.active
        events = rollout_events(db, "m")
        assert rollout_events(db, "other") == []
    assert [(e.event, e.share, e.created_at, e.checkpoint_id) for e in events] == [
        ("start", 10.0, 1.0, "ck"), ("rollback", 0.0, 2.0, "ck")]
    assert events[0].details == {"reason": "canary at 10%", "share": 10.0}


def test_connections_are_closed_and_the_schema_is_created_once(tmp_path: Path):
    store = write(tmp_path / "tao.db", request("r", 1.0))
    with store.connection() as db:
        ensure_schema(db)  # again, on a database that has everything: nothing changes
        assert db.journal_mode == "wal" and db["requests"].count == 1
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        db.execute("SELECT 1")
