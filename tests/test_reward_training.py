"""`tao reward train` on a generated preference set, through real SQLite feedback rows."""

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlite_utils
import yaml

from tao.demo.prompts import TOPICS
from gateway.store import RequestLog, Store, connection, last_distilled_until

pytestmark = pytest.mark.slow


def preference_store(path: Path, count: int) -> None:
    """`count` logged requests, each with a fluent and a shouting, repetitive answer, and a person's
    preference for the fluent one (in a random position)."""
    rng = random.Random(0)
    store = Store(path)
    store.start()
    preferred: list[int] = []
    for i in range(count):
        topic = TOPICS[i % len(TOPICS)]
        good = f"{topic.capitalize()} can be calm and interesting to learn about, in many small ways."
        bad = f"{topic.upper()}!!! {topic.upper()} {topic.upper()} NO NO NO NO."
        texts = [good, bad] if rng.random() < 0.5 else [bad, good]
        preferred.append(texts.index(good))
        rid = f"r{i}"
        messages = [{"role": "user", "content": f"Tell me something about {topic} (#{i})."}]
        store.log(RequestLog(
            request={"id": rid, "created_at": time.time(), "model": "smollm2", "endpoint": "chat", "status": "ok",
                     "messages": json.dumps(messages), "prompt": messages[0]["content"], "best_of": 2},
            candidates=[{"request_id": rid, "idx": k, "text": t, "score": None, "won": 0} for k, t in enumerate(texts)]))
    store.close()
    for i, index in enumerate(preferred):
        store.record_feedback({"request_id": f"r{i}", "user": "rater", "created_at": time.time(),
                               "kind": "preference", "candidate_index": index})


def tao(config: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    return subprocess.run([sys.executable, "-m", "gateway", "reward", "train", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=900, env=env)


def test_reward_model_from_feedback_beats_chance_on_held_out_pairs(tmp_path: Path):
    preference_store(tmp_path / "tao.db", 120)
    config = tmp_path / "tao.yaml"
    config.write_text(yaml.safe_dump({"store": {"path": str(tmp_path / "tao.db")}}))
    run = tao(config, "--max-steps", "12", "--out", str(tmp_path / "rm"))
    assert run.returncode == 0, run.stdout + run.stderr
    [row] = sqlite_utils.Database(tmp_path / "tao.db")["checkpoints"].rows
    metrics = json.loads(row["metrics"])
    assert row["method"] == "reward" and metrics["heldout_pairs"] >= 10
    print(f"held-out pairwise accuracy {metrics['heldout_pairwise_accuracy']:.1%} on {metrics['heldout_pairs']} pairs")
    assert metrics["heldout_pairwise_accuracy"] >= 0.8, metrics  # chance is 0.5
    assert f"path: {row['path']}" in run.stdout
    published = Path(row["path"]).parent
    assert (published / "tao_reward_model.json").is_file() and not list((tmp_path / "rm").glob(".staging-*"))
    with connection(tmp_path / "tao.db") as db:
        assert last_distilled_until(db, "smollm2") is None  # a reward model does not move the distill window

    import asyncio

    from gateway.config import HFReward
    from gateway.rewards import build_scorer

    scorer = build_scorer(HFReward(path=row["path"]))
    good, bad = asyncio.run(scorer.score("Tell me something about owls.",
                                         ["Owls can be calm and interesting to learn about.", "OWLS!!! OWLS NO NO NO."]))
    assert good > bad


def test_too_few_pairs_is_a_clear_refusal(tmp_path: Path):
    preference_store(tmp_path / "tao.db", 5)
    config = tmp_path / "tao.yaml"
    config.write_text(yaml.safe_dump({"store": {"path": str(tmp_path / "tao.db")}}))
    run = tao(config, "--out", str(tmp_path / "rm"))
    assert run.returncode == 2 and "too few preference pairs" in run.stdout
    assert sqlite_utils.Database(tmp_path / "tao.db")["checkpoints"].count == 0
