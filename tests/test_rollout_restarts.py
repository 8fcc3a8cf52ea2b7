"""Rollouts survive restarts of either side: the gateway (vLLM still holds the adapter and answers
"already loaded"), and vLLM (it forgot the adapter and answers 404 for it). A rollback frees the
adapter, and a rolled-back checkpoint can be started again. The fake upstream answers as vLLM's
LoRA API does."""

from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from gateway.app import create_app
from gateway.config import ModelConfig, RolloutConfig, Settings, StoreConfig
from tests.fake_upstream import FakeConfig, FakeUpstream
from tests.servers import running
from gateway.store import connection
from tests.test_rollout import CHECKPOINT, register
from tests.waiting import wait_until

ADMIN = {"X-TAO-Arm": "candidate"}
ADAPTER = CHECKPOINT  # the adapter name the rollout gives vLLM


@pytest.fixture
def vllm():
    upstream = FakeUpstream(FakeConfig(known_models=["mock"], texts=["base answer."],
                                       adapter_texts=["adapter answer."]))
    with running(upstream) as url:
        yield upstream, url + "/v1"


def settings(tmp_path: Path, url: str) -> Settings:
    return Settings(models=[ModelConfig(name="mock", model="openai/mock", api_base=url, api_key="none", best_of=1,
                                        num_retries=0)],
                    store=StoreConfig(path=tmp_path / "tao.db"), rollout=RolloutConfig(check_interval_s=3600))


def ask_candidate(gw_url: str) -> httpx.Response:
    return httpx.post(gw_url + "/v1/chat/completions", headers=ADMIN, timeout=30, json={
        "model": "mock", "messages": [{"role": "user", "content": "hi"}]})


def rollout_state(gw_url: str) -> str:
    [rollout] = httpx.get(gw_url + "/admin/rollout").json()["rollouts"]
    return rollout["state"]


def test_a_gateway_restart_keeps_the_rollout_when_vllm_still_holds_the_adapter(tmp_path, vllm):
    upstream, url = vllm
    with running(create_app(settings(tmp_path, url))) as gw:
        register(tmp_path / "tao.db")
        started = httpx.post(gw + "/admin/rollout/mock/start", json={"checkpoint": CHECKPOINT, "canary": 10})
        assert started.status_code == 200 and ADAPTER in upstream.adapters
    with running(create_app(settings(tmp_path, url))) as gw:  # vLLM kept the adapter: "already loaded"
        assert rollout_state(gw) == "canary"
        assert ask_candidate(gw).json()["choices"][0]["message"]["content"] == "adapter answer."


def test_a_vllm_restart_reloads_the_adapter_on_the_next_request(tmp_path, vllm):
    upstream, url = vllm
    with running(create_app(settings(tmp_path, url))) as gw:
        register(tmp_path / "tao.db")
        assert httpx.post(gw + "/admin/rollout/mock/start", json={"checkpoint": CHECKPOINT}).status_code == 200
        upstream.restart()  # vLLM came back without the adapter: requests for it get 404
        reply = ask_candidate(gw)
        assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["content"] == "adapter answer."
        assert ADAPTER in upstream.adapters and rollout_state(gw) == "canary"


def test_a_rollback_unloads_the_adapter_and_the_checkpoint_can_start_again(tmp_path, vllm):
    upstream, url = vllm
    with running(create_app(settings(tmp_path, url))) as gw:
        register(tmp_path / "tao.db")
        assert httpx.post(gw + "/admin/rollout/mock/start", json={"checkpoint": CHECKPOINT}).status_code == 200
        assert httpx.post(gw + "/admin/rollout/mock/rollback").status_code == 200
        wait_until(lambda: ADAPTER not in upstream.adapters, "the rolled-back adapter was not unloaded", timeout_s=10)
        again = httpx.post(gw + "/admin/rollout/mock/start", json={"checkpoint": CHECKPOINT})
        assert again.status_code == 200 and again.json()["state"] == "canary" and ADAPTER in upstream.adapters


def test_two_gateways_on_one_log_follow_one_rollout_and_one_decides(tmp_path, vllm):
    """An operator's call to either gateway is served by both within a sync; the same user gets the
    same arm on both; one gateway holds the decider lease, and when it stops the other takes it."""
    upstream, url = vllm
    fast = RolloutConfig(check_interval_s=3600, sync_interval_s=0.1, lease_s=1.0)
    first_app, second_app = (create_app(settings(tmp_path, url).model_copy(update={"rollout": fast}))
                             for _ in range(2))
    register(tmp_path / "tao.db")

    def decider() -> str | None:
        with connection(tmp_path / "tao.db") as db:
            row = db.execute("SELECT holder FROM locks WHERE name = 'rollout-decider'").fetchone()
        return row[0] if row else None

    with ExitStack() as leader, ExitStack() as follower:
        first = leader.enter_context(running(first_app))
        wait_until(lambda: first_app.state.rollouts.deciding, "the first gateway did not take the decider lease")
        second = follower.enter_context(running(second_app))
        assert decider() == first_app.state.rollouts.holder and not second_app.state.rollouts.deciding
        status = httpx.get(second + "/admin/rollout").json()
        assert status["gateway"] == second_app.state.rollouts.holder and status["decides"] is False
        started = httpx.post(first + "/admin/rollout/mock/start", json={"checkpoint": CHECKPOINT, "canary": 50})
        assert started.status_code == 200
        wait_until(lambda: rollout_state(second) == "canary" and second_app.state.rollouts.rollouts, "not followed")
        assert ask_candidate(second).json()["choices"][0]["message"]["content"] == "adapter answer."
        for user in ("ana", "bo", "cy", "di", "ed", "fay"):
            arms = {httpx.post(gw + "/v1/chat/completions", timeout=30, json={
                "model": "mock", "user": user, "messages": [{"role": "user", "content": "hi"}]}).json()["tao"]["arm"]
                for gw in (first, second)}
            assert len(arms) == 1, (user, arms)  # one user, one arm, whichever gateway answers
        assert httpx.post(second + "/admin/rollout/mock/promote").status_code == 200
        wait_until(lambda: first_app.state.rollouts.rollouts["mock"].state == "promoted", "the promotion not followed")
        leader.close()  # the deciding gateway stops (and gives the lease up): the other takes it over
        wait_until(lambda: second_app.state.rollouts.deciding, "the survivor did not take over deciding", 10)
        assert decider() == second_app.state.rollouts.holder
