"""POST /v1/feedback round-trips into the store, validated and idempotent per (request, user)."""

import httpx
import pytest

PROMPT = [{"role": "user", "content": "Hi"}]


def post(gw, body: dict, key: str = "test-key") -> httpx.Response:
    return httpx.post(gw.url + "/v1/feedback", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30)


@pytest.fixture
def served(gateway, fake):
    upstream, _ = fake
    upstream.config.texts = ["a", "bbb", "cc"]
    with gateway(reward={"kind": "python", "function": "tests.scorers:longest"}) as gw:
        tao = gw.client.chat.completions.create(model="mock", messages=PROMPT,
                                                extra_body={"best_of": 3}).model_extra["tao"]
        yield gw, tao


def test_each_kind_of_verdict_is_stored(served):
    gw, tao = served
    rid = tao["request_id"]
    assert post(gw, {"request_id": rid, "preferred": 2, "user": "ann"}).status_code == 200  # maybe still queued
    assert post(gw, {"request_id": rid, "rating": 0.0, "user": "bob", "comment": "wrong"}).status_code == 200
    assert post(gw, {"request_id": rid, "chosen": 0, "rejected": 1, "user": "cid"}).status_code == 200
    rows = {r["user"]: r for r in gw.db()["feedback"].rows}
    assert rows["ann"]["kind"] == "preference" and rows["ann"]["candidate_index"] == 2
    assert rows["bob"]["kind"] == "rating" and rows["bob"]["rating"] == 0.0
    assert rows["bob"]["candidate_index"] == tao["winner"] == 1  # a rating is about the served answer
    assert rows["cid"]["kind"] == "pairwise" and (rows["cid"]["candidate_index"], rows["cid"]["rejected_index"]) == (0, 1)


def test_feedback_is_idempotent_per_request_and_user(served):
    gw, tao = served
    for preferred in (0, 2, 2):
        assert post(gw, {"request_id": tao["request_id"], "preferred": preferred}).status_code == 200
    [row] = gw.db()["feedback"].rows  # one row for this (request, API key), the latest verdict
    assert row["candidate_index"] == 2 and row["user"].startswith("key:")


@pytest.mark.parametrize(("body", "status", "param"), [
    ({"request_id": "tao-nope", "preferred": 0}, 404, "request_id"),
    ({"preferred": 3}, 400, "preferred"),
    ({"chosen": 0, "rejected": 7}, 400, "rejected"),
    ({"rating": 2.0}, 422, "rating"),
    ({"preferred": 0, "rating": 1.0}, 422, None),
    ({"chosen": 1, "rejected": 1}, 422, None),
])
def test_bad_feedback_is_refused_with_the_reason(served, body, status, param):
    gw, tao = served
    response = post(gw, {"request_id": tao["request_id"], **body})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["message"]
    assert gw.db()["feedback"].count == 0
