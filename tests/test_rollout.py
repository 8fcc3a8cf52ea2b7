"""Rollout over real HTTP: a vLLM-like fake upstream that loads LoRA adapters at runtime."""

import json
import time

import httpx
import openai
import pytest

from gateway.store import (
    Checkpoint,
    CheckpointStatus,
    connection,
    register_checkpoint,
    shadow_pairs,
)
from tests.waiting import wait_until

CHECKPOINT = "smollm2-dpo-20261130-000000-abcdef"
SECOND = "smollm2-dpo-20261201-000000-123456"  # the next cycle's checkpoint
PROMPT = [{"role": "user", "content": "Say something."}]
PREFERS_WINNER = {"kind": "python", "function": "tests.scorers:prefers_keyword"}


def register(db_path, checkpoint_id: str = CHECKPOINT, method: str = "dpo", **metrics) -> None:
    with connection(db_path) as db:
        register_checkpoint(db, Checkpoint(
            id=checkpoint_id, created_at=time.time(), model="mock", base_model="base", method=method, data_since=0,
            data_until=time.time(), metrics=metrics, path="/adapters/" + checkpoint_id,
            status=CheckpointStatus.CANDIDATE))


def promote_first(gw) -> None:
    """CHECKPOINT rolled out and promoted, serving at k = 2 (as distill chose it): a second cycle's incumbent."""
    register(gw.db_path, best_of=2)
    admin(gw, "start", checkpoint=CHECKPOINT)
    admin(gw, "promote")


def wait_for_pairs(gw, count: int, timeout_s: float = 10.0) -> None:
    """Wait until `count` incumbent replies have a scored shadow reply (shadows run in the background)."""
    def found() -> int:
        with connection(gw.db_path) as db:
            return len(shadow_pairs(db, "mock", since=0.0, candidate_n=1))

    wait_until(lambda: found() >= count, lambda: f"{found()} of {count} shadow pairs logged", timeout_s)


def admin(gw, action: str, **body) -> httpx.Response:
    if action == "status":
        return httpx.get(gw.url + "/admin/rollout", timeout=30)
    return httpx.post(f"{gw.url}/admin/rollout/mock/{action}", json=body or None, timeout=30)


def ask(gw, user: str, **kwargs):
    """One request from `user`, on a prompt of its own (the policy's unit is a prompt)."""
    messages = [{"role": "user", "content": f"Say something to {user}."}]
    reply = gw.client.chat.completions.create(model="mock", messages=messages, user=user, **kwargs)
    return reply.model_extra["tao"]


@pytest.mark.each_transport
def test_split_is_stable_per_user_and_near_the_canary_share(gateway, fake):
    upstream, _ = fake
    with gateway(rollout={"shadow_fraction": 0.0, "check_interval_s": 3600}) as gw:
        register(gw.db_path)
        started = admin(gw, "start", checkpoint=CHECKPOINT, canary=20)
        assert started.status_code == 200, started.text
        assert upstream.adapters == {CHECKPOINT: "/adapters/" + CHECKPOINT}  # loaded before any traffic
        arms = [ask(gw, f"user-{i}") for i in range(400)]
        on_candidate = [t for t in arms if t["arm"] == "candidate"]
        # 400 users, p = 0.2: sd = 8 requests; allow 3 sd (±6 points).
        assert 0.14 <= len(on_candidate) / 400 <= 0.26
        assert all(t["best_of"] == 1 and t["model_version"] == CHECKPOINT for t in on_candidate)
        assert all(t["best_of"] == 4 and t["arm"] == "base" for t in arms if t not in on_candidate)
        assert sum(b["model"] == CHECKPOINT for b in upstream.bodies) == len(on_candidate)
        for user in ("alice", "bob", "carol"):
            assert len({ask(gw, user)["arm"] for _ in range(10)}) == 1  # sticky
        rows = gw.wait_for_rows(430)
        assert {r["arm"] for r in rows} == {"base", "candidate"}


def test_a_better_candidate_is_promoted_at_the_first_crossing_and_serves_at_n1(gateway, fake):
    upstream, _ = fake
    upstream.config.texts = ["plain answer"]
    upstream.config.adapter_texts = ["WINNER answer"]
    rollout = {"steps": [25, 50, 100], "pairs_per_look": 5, "max_looks": 3, "shadow_fraction": 1.0,
               "check_interval_s": 3600, "explore_fraction": 0.0, "candidate_best_of": 1}
    with gateway(reward=PREFERS_WINNER, rollout=rollout) as gw:
        register(gw.db_path)
        admin(gw, "start", checkpoint=CHECKPOINT, canary=25)
        assert admin(gw, "check").json()["action"] == "hold"  # no pairs yet: no look
        for i in range(40):
            ask(gw, f"u{i}")
        wait_for_pairs(gw, 10)
        first = admin(gw, "check").json()
        assert first["action"] == "promote" and first["numbers"]["look"] == 1 and first["numbers"]["units"] == 5
        assert first["numbers"]["lower"] == 1.0  # every shadow reply beat its incumbent winner by 1
        assert admin(gw, "check").json()["action"] == "hold"  # promoted: no more looks
        status = admin(gw, "status").json()["rollouts"][0]
        assert status["state"] == "promoted" and status["share"] == 100 and status["looks"] == 1
        after = ask(gw, "anyone")
        assert after["arm"] == "promoted" and after["best_of"] == 1  # the default N dropped from 4 to 1
        gw.wait_for_rows(41)
        tokens = admin(gw, "status").json()["rollouts"][0]["tokens_per_request"]
        assert tokens["after"] < tokens["before"]
        events = list(gw.db()["rollout_events"].rows_where(order_by="id"))
        assert [e["event"] for e in events] == ["start", "promote"]  # from 25 %: no step needs a crossing of its own
        assert json.loads(events[-1]["details"])["units"] == 5
        assert gw.db()["checkpoints"].get(CHECKPOINT)["status"] == "promoted"
        metrics = httpx.get(gw.url + "/metrics").text
        assert 'tao_rollout_events_total{event="promote",model="mock"} 1.0' in metrics


def test_after_promotion_the_explore_share_serves_best_of_n_from_the_checkpoint_as_training_data(gateway, fake):
    """explore_fraction 1: every request after the promotion is the promoted adapter at the incumbent's N,
    logged on arm explore, and it is what the next distill reads (with the incumbent's, not the promoted N=1)."""
    from gateway.store import scored_chat_candidates

    upstream, _ = fake
    rollout = {"pairs_per_look": 5, "max_looks": 1, "shadow_fraction": 1.0, "check_interval_s": 3600,
               "explore_fraction": 1.0, "candidate_best_of": 1}
    with gateway(reward=PREFERS_WINNER, rollout=rollout) as gw:
        register(gw.db_path)
        admin(gw, "start", checkpoint=CHECKPOINT)
        admin(gw, "promote")
        tao = [ask(gw, f"later-{i}") for i in range(3)]
        assert all(t["arm"] == "explore" and t["best_of"] == 4 and t["model_version"] == CHECKPOINT for t in tao)
        assert sum(b["model"] == CHECKPOINT for b in upstream.bodies) == 3  # the adapter generated them
        gw.wait_for_rows(3)
        with connection(gw.db_path) as db:
            learned = {c.request_id for c in scored_chat_candidates(db, "mock")}
        assert learned == {t["request_id"] for t in tao}


def test_the_next_candidate_is_tested_against_the_promoted_checkpoint_which_a_rollback_restores(gateway, fake):
    """The loop's second cycle: the incumbent arm is the promoted checkpoint at its k (not the base
    weights); a rollback gives it everything back, a promotion retires it; a restart reloads both."""
    upstream, _ = fake
    rollout = {"shadow_fraction": 1.0, "check_interval_s": 3600, "explore_fraction": 0.0}
    with gateway(rollout=rollout) as gw:
        promote_first(gw)
        register(gw.db_path, "gated-against-base")  # distilled while the base weights still served
        stale = admin(gw, "start", checkpoint="gated-against-base")
        assert stale.status_code == 409 and stale.json()["error"]["code"] == "incumbent_changed"
        assert "gated against the base weights" in stale.json()["error"]["message"]
        register(gw.db_path, SECOND, incumbent=CHECKPOINT, best_of=1)
        started = admin(gw, "start", checkpoint=SECOND, canary=50)
        assert started.status_code == 200, started.text
        assert started.json()["incumbent_checkpoint_id"] == CHECKPOINT and started.json()["incumbent_best_of"] == 2
        incumbent = ask(gw, "a", extra_headers={"X-TAO-Arm": "base"})
        assert (incumbent["arm"], incumbent["best_of"], incumbent["model_version"]) == ("base", 2, CHECKPOINT)
        assert any(body["model"] == CHECKPOINT for body in upstream.bodies)  # the promoted adapter answered
        wait_for_pairs(gw, 1)  # its best-of-2 against the candidate's shadow N=1
        rolled_back = admin(gw, "rollback").json()
        assert (rolled_back["state"], rolled_back["checkpoint_id"], rolled_back["share"]) == ("promoted", CHECKPOINT, 100)
        assert ask(gw, "b")["model_version"] == CHECKPOINT
        wait_until(lambda: SECOND not in upstream.adapters, "the rolled-back adapter was not unloaded")
        assert gw.db()["checkpoints"].get(SECOND)["status"] == "rolled_back"
        assert gw.db()["checkpoints"].get(CHECKPOINT)["status"] == "promoted"
        assert admin(gw, "start", checkpoint=SECOND, canary=50).status_code == 200  # tried again
    upstream.adapters.clear()  # a restarted upstream: the gateway loads both adapters again
    with gateway(rollout=rollout) as gw:
        assert set(upstream.adapters) == {CHECKPOINT, SECOND}
        assert ask(gw, "c", extra_headers={"X-TAO-Arm": "base"})["model_version"] == CHECKPOINT
        promoted = admin(gw, "promote").json()
        assert (promoted["checkpoint_id"], promoted["incumbent_checkpoint_id"]) == (SECOND, None)
        assert gw.db()["checkpoints"].get(CHECKPOINT)["status"] == "retired"
        wait_until(lambda: CHECKPOINT not in upstream.adapters, "the retired adapter was not unloaded")
        events = [e["event"] for e in gw.db()["rollout_events"].rows_where(order_by="id")]
        assert events == ["start", "promote", "start", "rollback", "restore", "start", "promote"]


def test_a_canary_that_fails_at_restart_hands_back_to_the_promoted_checkpoint(gateway, fake):
    upstream, _ = fake
    rollout = {"shadow_fraction": 0.0, "check_interval_s": 3600, "explore_fraction": 0.0}
    with gateway(rollout=rollout) as gw:
        promote_first(gw)
        register(gw.db_path, SECOND, incumbent=CHECKPOINT)
        assert admin(gw, "start", checkpoint=SECOND, canary=50).status_code == 200
    upstream.adapters.clear()
    upstream.config.refused_adapters = [SECOND]  # its files went missing while the gateway was down
    with gateway(rollout=rollout) as gw:
        status = admin(gw, "status").json()["rollouts"][0]
        assert (status["state"], status["checkpoint_id"], status["candidate_best_of"]) == ("promoted", CHECKPOINT, 2)
        assert {ask(gw, f"u{i}")["model_version"] for i in range(10)} == {CHECKPOINT}
        events = [e["event"] for e in gw.db()["rollout_events"].rows_where(order_by="id")]
        assert events[-2:] == ["failed", "restore"]


def test_a_worse_candidate_is_rolled_back_automatically(gateway, fake):
    upstream, _ = fake
    upstream.config.texts = ["WINNER answer"]
    upstream.config.adapter_texts = ["plain answer"]
    rollout = {"pairs_per_look": 5, "shadow_fraction": 1.0, "check_interval_s": 0.1}
    with gateway(reward=PREFERS_WINNER, rollout=rollout) as gw:
        register(gw.db_path)
        admin(gw, "start", checkpoint=CHECKPOINT, canary=50)
        deadline = time.monotonic() + 30
        i = 0
        while admin(gw, "status").json()["rollouts"][0]["state"] == "canary":
            assert time.monotonic() < deadline
            ask(gw, f"u{i}")
            i += 1
        assert all(ask(gw, f"u{k}")["arm"] == "base" for k in range(20))  # the incumbent has it all back
        [rollback] = list(gw.db()["rollout_events"].rows_where("event = 'rollback'"))
        details = json.loads(rollback["details"])
        assert details["upper"] < -details["margin"] and details["mean"] == -1.0 and details["look"] == 1
        # The checkpoint is marked, so the next distill run uses its data window again.
        assert gw.db()["checkpoints"].get(CHECKPOINT)["status"] == "rolled_back"


def test_only_real_best_of_n_against_the_candidates_n_makes_a_pair(gateway, fake):
    """An incumbent request that asked for N=1 compares nothing the rollout claims: no pair."""
    with gateway(rollout={"shadow_fraction": 1.0, "check_interval_s": 3600}) as gw:
        register(gw.db_path)
        admin(gw, "start", checkpoint=CHECKPOINT, canary=1)
        best_of_n = ask(gw, "a", extra_headers={"X-TAO-Arm": "base"})
        single = ask(gw, "b", extra_headers={"X-TAO-Arm": "base"}, extra_body={"best_of": 1})
        wait_for_pairs(gw, 1)
        gw.wait_for_rows(4)
        with connection(gw.db_path) as db:
            found = shadow_pairs(db, "mock", since=0.0, candidate_n=1)
        assert [p.request_id for p in found] == [best_of_n["request_id"]] and single["best_of"] == 1


def test_a_reward_model_cannot_be_rolled_out(gateway, fake):
    upstream, _ = fake
    with gateway() as gw:
        register(gw.db_path, "reward-20261130-000000-abcdef", method="reward")  # as `tao reward train` registers
        response = admin(gw, "start", checkpoint="reward-20261130-000000-abcdef", canary=50)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "not_servable" and "reward model" in error["message"]
        assert upstream.adapters == {}
        assert admin(gw, "status").json()["rollouts"][0]["state"] is None


def test_a_failed_adapter_load_leaves_the_incumbent_serving(gateway, fake):
    upstream, _ = fake
    upstream.config.fail_lora_load = True
    with gateway() as gw:
        register(gw.db_path)
        response = admin(gw, "start", checkpoint=CHECKPOINT, canary=50)
        assert response.status_code == 502 and response.json()["error"]["code"] == "adapter_load_failed"
        assert all(ask(gw, f"u{i}")["arm"] == "base" for i in range(20))
        assert admin(gw, "status").json()["rollouts"][0]["state"] == "failed"
        assert [e["event"] for e in gw.db()["rollout_events"].rows] == ["failed"]
        assert admin(gw, "start", checkpoint="nope").status_code == 404


def test_rollout_state_survives_a_restart(gateway, fake):
    upstream, _ = fake
    with gateway(rollout={"shadow_fraction": 0.0, "check_interval_s": 3600}) as gw:
        register(gw.db_path)
        admin(gw, "start", checkpoint=CHECKPOINT, canary=30)
        before = {f"u{i}": ask(gw, f"u{i}")["arm"] for i in range(40)}
    upstream.adapters.clear()  # the upstream restarted too: the adapter must be loaded again
    with gateway(rollout={"shadow_fraction": 0.0, "check_interval_s": 3600}) as gw:
        assert CHECKPOINT in upstream.adapters
        assert admin(gw, "status").json()["rollouts"][0]["share"] == 30
        assert {u: ask(gw, u)["arm"] for u in before} == before
        assert "candidate" in before.values() and "base" in before.values()


def test_shadow_answers_are_logged_not_returned(gateway, fake):
    upstream, _ = fake
    with gateway(rollout={"shadow_fraction": 1.0, "check_interval_s": 3600}) as gw:
        register(gw.db_path)
        admin(gw, "start", checkpoint=CHECKPOINT, canary=1)
        tao = ask(gw, "user-on-base", extra_headers={"X-TAO-Arm": "base"})
        assert tao["arm"] == "base"
        rows = {r["id"]: r for r in gw.wait_for_rows(2)}
        shadow = rows[tao["request_id"] + "-shadow"]
        assert shadow["arm"] == "shadow" and shadow["best_of"] == 1 and shadow["model_version"] == CHECKPOINT


def test_admin_routes_and_arm_pinning_need_the_admin_key(gateway):
    with gateway(auth={"api_keys": ["user-key"], "admin_key": "root"}) as gw:
        assert httpx.get(gw.url + "/admin/rollout").status_code == 401
        headers = {"Authorization": "Bearer root"}
        assert httpx.get(gw.url + "/admin/rollout", headers=headers).status_code == 200
        user = openai.OpenAI(base_url=gw.url + "/v1", api_key="user-key", max_retries=0)
        with pytest.raises(openai.PermissionDeniedError):
            user.chat.completions.create(model="mock", messages=PROMPT, extra_headers={"X-TAO-Arm": "candidate"})
