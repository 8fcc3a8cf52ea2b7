"""Preference pairs for `tao reward train`, read from feedback rows in a real SQLite log (no training)."""

import json
from pathlib import Path

from distill.reward_model import feedback_pairs
from gateway.store import RequestLog, Store


def answer(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def test_each_kind_of_feedback_becomes_chosen_over_rejected_pairs(tmp_path: Path):
    store = Store(tmp_path / "tao.db")
    store.start()
    for rid, question, texts in [("p", "q1", ["a", "b", "b", "c"]), ("w", "q2", ["x", "y"]),
                                 ("good", "q3", ["fine"]), ("bad", "q3", ["poor"])]:
        store.log(RequestLog(
            request={"id": rid, "created_at": 1.0, "model": "m", "endpoint": "chat", "status": "ok",
                     "messages": json.dumps([{"role": "user", "content": question}]), "prompt": question},
            candidates=[{"request_id": rid, "idx": k, "text": t} for k, t in enumerate(texts)]))
    store.close()
    for row in [{"request_id": "p", "kind": "preference", "candidate_index": 1},
                {"request_id": "w", "kind": "pairwise", "candidate_index": 1, "rejected_index": 0},
                {"request_id": "good", "kind": "rating", "candidate_index": 0, "rating": 0.9},
                {"request_id": "bad", "kind": "rating", "candidate_index": 0, "rating": 0.1},
                {"request_id": "unknown", "kind": "preference", "candidate_index": 0},
                {"request_id": "w", "user": "other", "kind": "preference", "candidate_index": 5}]:
        store.record_feedback({"user": "rater", "created_at": 2.0, **row})
    with store.connection() as db:
        pairs = feedback_pairs(db)
    assert [(p["prompt"][0]["content"], p["chosen"], p["rejected"]) for p in pairs] == [
        ("q1", answer("b"), answer("a")), ("q1", answer("b"), answer("c")),  # preferred over each distinct other
        ("q2", answer("y"), answer("x")),  # pairwise
        ("q3", answer("fine"), answer("poor")),  # a good rating over a bad one for the same prompt
    ]  # unknown requests and out-of-range indexes give nothing
