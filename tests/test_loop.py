"""`tao loop`: two cycles over real HTTP with the real embedded SmolLM2 as the weights distill trains
(the gateway serves through a vLLM-like fake that loads adapters at runtime, so its replies and the
policy's decisions are known), and the states a running loop must get past or refuse."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import DistillConfig, ModelConfig, RolloutConfig, Settings, StoreConfig
from gateway.embedded import embedded_model_dir
from gateway.store import exclusive, get_checkpoint, get_rollout
from tao.loop import CHECKPOINT_FILES_GONE, LOOP_LOCKED, GatewayAdmin, Loop, Step
from tests.test_rollout import PREFERS_WINNER, admin, ask, register

ROLLOUT = {"steps": [50, 100], "margin": 1.0, "pairs_per_look": 4, "max_looks": 1, "shadow_fraction": 1.0,
           "check_interval_s": 0.2, "explore_fraction": 1.0}


def loop_settings(gw, upstream_url: str, tmp_path: Path, **rollout) -> Settings:
    """The loop's view of the gateway's config: the same model, store, scorer and rollout plan, and a
    tiny distill of the embedded weights (its gate publishes whatever it measures)."""
    return Settings(
        models=[ModelConfig(name="mock", backend="litellm", model="openai/mock", api_base=upstream_url, api_key="none",
                            best_of=4, max_best_of=16, max_tokens=12)],
        reward=PREFERS_WINNER, store=StoreConfig(path=gw.db_path), rollout=RolloutConfig(**{**ROLLOUT, **rollout}),
        distill=DistillConfig(model="mock", base_model=str(embedded_model_dir()), checkpoints_dir=tmp_path / "ckpt",
                              holdout_fraction=0.25, min_train_prompts=2, min_heldout_prompts=1,
                              dpo={"min_gap": 0.05}, max_steps=2, batch_size=2, learning_rate=1e-3, eval_samples=1,
                              max_new_tokens=12, rounds=1, gate_margin=-1.0, lock_ttl_s=30))


def until_cycle_ends(loop: Loop, gw, users: str, most: int = 60) -> Step:
    """Send traffic, one request per step, until the gateway's policy decides and the loop sees it."""
    for i in range(most):
        ask(gw, f"{users}-{i}")
        step = loop.advance()
        if step.kind == "ended":
            return step
        assert step.kind == "waiting", step.message
    raise AssertionError(f"no decision after {most} requests: {step.message}")


@pytest.mark.slow
def test_two_cycles_the_second_learns_from_the_promoted_checkpoint_and_is_judged_against_it(gateway, fake,
                                                                                          tmp_path: Path):
    upstream, upstream_url = fake
    upstream.config.texts = ["plain answer", "WINNER answer"]
    upstream.config.adapter_texts = ["WINNER answer"]
    with gateway(reward=PREFERS_WINNER, rollout=ROLLOUT) as gw:
        settings = loop_settings(gw, upstream_url, tmp_path)
        loop = Loop(lambda: settings, GatewayAdmin(gw.url), poll_s=0.1, retry_s=0.1)
        for i in range(12):
            ask(gw, f"traffic-{i}")
        gw.wait_for_rows(12)

        distilled = loop.advance()
        assert distilled.kind == "distilled", distilled.message
        first = distilled.distill.checkpoint_id
        started = loop.advance()
        assert started.kind == "started" and "against the base weights at best-of-4" in started.message
        ended = until_cycle_ends(loop, gw, "cycle1")
        assert (ended.ended.checkpoint_id, ended.ended.outcome) == (first, "promoted")

        # The promoted checkpoint answers everything at best-of-4 (explore_fraction 1): the next cycle's data.
        upstream.config.adapter_texts = ["WINNER answer", "plain adapter answer"]
        for i in range(12):
            assert ask(gw, f"explore-{i}")["arm"] == "explore"
        gw.wait_for_rows(12 + 12)
        distilled = loop.advance()
        assert distilled.kind == "distilled", distilled.message
        second = distilled.distill.checkpoint_id
        db = gw.db()
        cp1, cp2 = get_checkpoint(db, first), get_checkpoint(db, second)
        assert cp2.metrics["incumbent"] == first and cp2.metrics["started_from"] == first
        assert cp2.metrics["eval"]["reference"] == first  # gated against what serves, not the base weights
        assert cp2.data_since == cp1.data_until  # only what was logged after the first checkpoint's data

        restarted = Loop(lambda: settings, GatewayAdmin(gw.url), poll_s=0.1, retry_s=0.1)  # as after a kill
        assert restarted.advance().kind == "started"
        upstream.config.adapter_texts = ["WINNER answer"]
        incumbent = ask(gw, "pinned", extra_headers={"X-TAO-Arm": "base"})
        assert incumbent["model_version"] == first  # the incumbent arm is the promoted checkpoint
        assert Loop(lambda: settings, GatewayAdmin(gw.url)).advance().kind == "waiting"  # a canary: no distill
        ended = until_cycle_ends(restarted, gw, "cycle2")
        assert (ended.ended.checkpoint_id, ended.ended.outcome) == (second, "promoted")
        assert get_checkpoint(gw.db(), first).status == "retired"
        assert get_rollout(gw.db(), "mock").checkpoint_id == second

        # A checkpoint gated against the base weights, found after a promotion: retired, not rolled out.
        register(gw.db_path, "gated-while-base-served")
        stale = loop.advance()
        assert stale.ended.outcome == "stale" and "gated against the base weights" in stale.message
        assert get_checkpoint(gw.db(), "gated-while-base-served").status == "retired"

        # explore_fraction 0: nothing new is logged, so the loop says so and waits (no distill run).
        quiet = Loop(lambda: loop_settings(gw, upstream_url, tmp_path, explore_fraction=0.0), GatewayAdmin(gw.url))
        waiting = quiet.advance()
        assert waiting.kind == "waiting" and "no new data" in waiting.message and "explore_fraction" in waiting.message

        # The promoted checkpoint's files gone: the loop stops with exit 5 and publishes nothing.
        adapter = Path(get_checkpoint(gw.db(), second).path)
        shutil.move(adapter, tmp_path / "moved")
        assert loop.run(cycles=1, sleep=lambda s: None) == CHECKPOINT_FILES_GONE
        shutil.move(tmp_path / "moved", adapter)
        assert gw.db()["checkpoints"].count == 3
        assert admin(gw, "status").json()["rollouts"][0]["checkpoint_id"] == second


def test_one_loop_per_store_a_second_exits_4(gateway, tmp_path: Path):
    with gateway() as gw:
        config = tmp_path / "tao.yaml"
        config.write_text(f"store: {{path: {gw.db_path}}}\n")
        with exclusive(gw.db_path, "loop"):
            run = subprocess.run([sys.executable, "-m", "tao", "loop", "--config", str(config), "--url", gw.url,
                                  "--cycles", "1"], capture_output=True, text=True, timeout=120,
                                 env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"})
        assert run.returncode == LOOP_LOCKED, run.stderr
        assert "another tao loop works on" in run.stderr and "lease runs until" in run.stderr
