"""The distill job on the real embedded SmolLM2, on logs made by real requests through the gateway."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlite_utils
import yaml

from distill.dataset import build_rows, load_prompts, split
from distill.job import LOCKED, TOO_LITTLE_DATA, run_distill
from tao.demo.prompts import generate_prompts
from tao.demo.workload import send_workload
from gateway.app import create_app
from gateway.config import DistillConfig, load_settings
from gateway.rewards.instructions import detect
from gateway.store import RequestLog, Store, exclusive
from tests.servers import running
from tests.waiting import wait_until

pytestmark = pytest.mark.slow
PROMPTS = generate_prompts(14, seed=3)


def write_config(path: Path, db: Path, checkpoints: Path, **distill) -> Path:
    config = {
        "models": [{"name": "smollm2", "backend": "local", "model": "embedded:smollm2", "best_of": 4,
                    "max_best_of": 8, "max_tokens": 24}],
        "store": {"path": str(db)},
        # A tiny run is far from best-of-N: leave the gate's rollout check to tests/test_evaluate.py.
        "rollout": {"margin": 1.0},
        "distill": {"checkpoints_dir": str(checkpoints), "holdout_fraction": 0.25, "min_train_prompts": 2,
                    "min_heldout_prompts": 1, "dpo": {"min_gap": 0.05}, "max_steps": 3, "batch_size": 2,
                    "learning_rate": 1e-3, "eval_samples": 1, "max_new_tokens": 24, "rounds": 1, **distill},
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def logged(tmp_path_factory) -> Path:
    """A store filled by real best-of-4 requests to the embedded model (one prompt sent twice)."""
    root = tmp_path_factory.mktemp("logs")
    config = write_config(root / "tao.yaml", root / "tao.db", root / "checkpoints")
    with running(create_app(load_settings(config)), startup_timeout_s=300) as url:
        results = send_workload(url + "/v1", "smollm2", [*PROMPTS, PROMPTS[0]], best_of=4, concurrency=2)
    assert all(r.error is None for r in results)
    return root / "tao.db"


def fresh_copy(logged: Path, tmp_path: Path, **distill) -> Path:
    """A private copy of the logged store and a config pointing at it."""
    db = tmp_path / "tao.db"
    source = sqlite_utils.Database(logged)
    source.execute(f"VACUUM INTO '{db}'")
    return write_config(tmp_path / "tao.yaml", db, tmp_path / "checkpoints", **distill)


def test_prompt_generator_is_seeded_and_every_constraint_is_checkable():
    assert generate_prompts(50, seed=7) == generate_prompts(50, seed=7) != generate_prompts(50, seed=8)
    assert len(set(generate_prompts(200, seed=1))) == 200
    assert all(detect(p) for p in generate_prompts(200, seed=1))


def test_datasets_hold_out_by_hash_dedupe_and_order_pairs_by_score(logged: Path):
    db = sqlite_utils.Database(logged)
    prompts = load_prompts(db, "smollm2")
    assert len(prompts) == len(PROMPTS)  # the repeated prompt is one entry ...
    repeated = next(p for p in prompts if p.messages[0]["content"] == PROMPTS[0])
    assert len(repeated.request_ids) == 2 and len(repeated.candidates) == 8  # ... with pooled candidates
    train, heldout = split(prompts, 0.25)
    assert heldout and train and not {p.key for p in train} & {p.key for p in heldout}
    assert split(prompts, 0.25)[1] == heldout  # stable
    cfg = DistillConfig(dpo={"min_gap": 0.05}, sft={"margin": 0.0})
    heldout_texts = {p.messages[0]["content"] for p in heldout}
    for row in build_rows("dpo", train, cfg):
        assert row["score_chosen"] - row["score_rejected"] >= 0.05
        assert row["prompt"][0]["content"] not in heldout_texts
        assert row["chosen"][0]["role"] == "assistant" and row["chosen"] != row["rejected"]
    for row in build_rows("sft", train, cfg):
        source = next(p for p in train if p.messages == row["prompt"])
        [target] = source.targets(1)  # the best candidate that ended on its own
        assert row["completion"][0]["content"] == target.text and target.score >= source.mean_score
    assert [r["prompt"] for r in build_rows("grpo", train, cfg)] == [p.messages for p in train]


def test_failed_and_degraded_requests_are_not_training_data(tmp_path: Path):
    store = Store(tmp_path / "tao.db")
    store.start()
    for i, status in enumerate(["ok", "degraded", "error"]):
        rid = f"r{i}"
        store.log(RequestLog(
            request={"id": rid, "created_at": time.time(), "model": "smollm2", "endpoint": "chat", "status": status,
                     "arm": "base", "n_generated": 2,
                     "messages": json.dumps([{"role": "user", "content": f"q{i}"}]), "prompt": f"q{i}"},
            candidates=[{"request_id": rid, "idx": k, "text": f"a{k}", "score": None if status == "degraded" else k,
                         "won": int(k == 1)} for k in range(2)]))
    store.close()
    with store.connection() as db:
        assert [p.prompt_text for p in load_prompts(db, "smollm2")] == ["q0"]


def tao(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    return subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=timeout,
                          env=env)


def test_dpo_publishes_an_adapter_that_loads_with_peft_and_changes_the_model(logged: Path, tmp_path: Path):
    config = fresh_copy(logged, tmp_path, gate_margin=-1.0)  # publish whatever the eval says
    run = tao("distill", "--config", str(config), "--method", "dpo", "--max-steps", "3", "--since", "all")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "base best-of-N (logged)" in run.stdout and "best-of-N gain recovered" in run.stdout
    assert "DPO training" in run.stderr and "margin=" in run.stderr  # one bar per training run, its postfix
    assert "{'loss'" not in run.stdout + run.stderr  # not TRL's metrics dict at every step
    [row] = sqlite_utils.Database(tmp_path / "tao.db")["checkpoints"].rows
    assert row["status"] == "candidate" and row["method"] == "dpo" and row["model"] == "smollm2"
    metrics = json.loads(row["metrics"])
    assert metrics["steps"] == 3 and metrics["counts"]["heldout_prompts"] >= 1
    assert set(metrics["eval"]) >= {"base_n1", "new_n1", "base_best_of_n_logged", "gain_recovered"}
    adapter = Path(row["path"])
    assert (adapter / "adapter_config.json").is_file() and (adapter / "tao_checkpoint.json").is_file()
    assert not list((tmp_path / "checkpoints").glob(".staging-*"))

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base_dir = row["base_model"]
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    inputs = tokenizer("Describe the sea in all lowercase.", return_tensors="pt")
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    with torch.no_grad():
        before = base(**inputs).logits
        after = PeftModel.from_pretrained(base, adapter)(**inputs).logits
    assert (after - before).abs().max().item() > 1e-3

    # Data since the last published checkpoint: none yet, so the next run refuses cleanly.
    again = tao("distill", "--config", str(config))
    assert again.returncode == TOO_LITTLE_DATA and "too little data" in again.stdout


def test_an_iterated_round_samples_from_the_adapter_and_trains_it_again(logged: Path, tmp_path: Path):
    config = fresh_copy(logged, tmp_path, gate_margin=-1.0, rounds=2, round={"best_of": 2}, max_steps=2)
    run = tao("distill", "--config", str(config), "--method", "dpo", "--since", "all", "--verbose")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "round 2: best-of-2 from the adapter" in run.stderr  # its progress bar
    assert (run.stdout + run.stderr).count("{'loss'") >= 4  # --verbose: the raw metrics of every step, 2 rounds
    [row] = sqlite_utils.Database(tmp_path / "tao.db")["checkpoints"].rows
    counts = json.loads(row["metrics"])["counts"]
    # Round 2 pairs the best known answer over the adapter's own weaker ones (which texts those
    # pairs hold is tested on its own below); two answers per prompt still leave pairs to train on.
    assert counts["round1_dpo_rows"] > 0 and counts["round2_dpo_rows"] > 0
    # The round's in-sample progress is logged and recorded: a reward, not a count.
    assert 0.0 <= counts["round2_policy_reward"] <= 1.0 and "training prompts (logged N=1" in run.stderr
    assert (Path(row["path"]) / "adapter_config.json").is_file()


def test_grpo_trains_with_the_gateway_scorer(logged: Path, tmp_path: Path):
    config = fresh_copy(logged, tmp_path, gate_margin=-1.0, max_new_tokens=8)
    run = tao("distill", "--config", str(config), "--method", "grpo", "--max-steps", "1", "--since", "all")
    assert run.returncode == 0, run.stdout + run.stderr
    [row] = sqlite_utils.Database(tmp_path / "tao.db")["checkpoints"].rows
    train = json.loads(row["metrics"])["train"]
    assert row["method"] == "grpo" and "reward" in train  # rewards came from the scorer


def test_the_gate_rejects_a_run_that_did_not_improve(logged: Path, tmp_path: Path):
    config = fresh_copy(logged, tmp_path, gate_margin=1.0)  # rewards lie in [0, 1]: cannot win by 1.0
    run = tao("distill", "--config", str(config), "--max-steps", "2", "--since", "all")
    assert run.returncode == 3, run.stdout + run.stderr
    assert "rejected" in run.stdout
    [row] = sqlite_utils.Database(tmp_path / "tao.db")["checkpoints"].rows
    assert row["status"] == "rejected" and row["path"] is None
    assert not [p for p in (tmp_path / "checkpoints").iterdir()]  # nothing published


def test_a_killed_run_leaves_no_checkpoint_and_the_next_run_starts_cleanly(logged: Path, tmp_path: Path):
    config = fresh_copy(logged, tmp_path, max_steps=500, lock_ttl_s=3)
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "distill", "--config", str(config), "--since", "all"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    wait_for_staging(proc, tmp_path)
    proc.send_signal(signal.SIGKILL)  # mid-run: its staging directory exists, nothing is published yet
    proc.wait()
    db = sqlite_utils.Database(tmp_path / "tao.db")
    assert db["checkpoints"].count == 0
    [lock] = db["locks"].rows  # the dead run's lock is still there, its lease still running ...
    settings = load_settings(config)
    settings.distill.max_steps = 2
    settings.distill.gate_margin = -1.0
    assert run_distill(settings, since=0.0).exit_code == LOCKED
    while time.time() < lock["expires_at"]:  # ... until the lease the dead run can no longer renew expires
        time.sleep(0.1)
    outcome = run_distill(settings, since=0.0)  # then it is taken over; the staging dir is cleaned
    assert outcome.exit_code == 0, outcome.message
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == [outcome.checkpoint_id]
    assert db["locks"].count == 0


def test_sigterm_stops_a_run_cleanly_and_frees_the_lock_at_once(logged: Path, tmp_path: Path):
    """As `docker stop` or Kubernetes would: the job (PID 1 in a container) handles SIGTERM."""
    config = fresh_copy(logged, tmp_path, max_steps=500)
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    proc = subprocess.Popen([sys.executable, "-m", "tao", "distill", "--config", str(config), "--since", "all"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    wait_for_staging(proc, tmp_path)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    db = sqlite_utils.Database(tmp_path / "tao.db")
    assert db["locks"].count == 0 and db["checkpoints"].count == 0


def wait_for_staging(proc: subprocess.Popen, tmp_path: Path) -> None:
    def staging() -> bool:
        assert proc.poll() is None, "the distill run ended before it staged a checkpoint"
        return bool(list((tmp_path / "checkpoints").glob(".staging-*")))

    wait_until(staging, "no checkpoint was staged", timeout_s=300, interval_s=0.2)


def test_concurrent_runs_are_refused_by_the_store_lock(tmp_path: Path):
    config = write_config(tmp_path / "tao.yaml", tmp_path / "tao.db", tmp_path / "checkpoints")
    settings = load_settings(config)
    Store(settings.store.path)
    with exclusive(settings.store.path, "distill"):
        outcome = run_distill(settings)
    assert outcome.exit_code == LOCKED and "another distill run" in outcome.message


def test_too_few_prompts_is_a_clear_refusal(tmp_path: Path):
    config = write_config(tmp_path / "tao.yaml", tmp_path / "tao.db", tmp_path / "checkpoints")
    run = tao("distill", "--config", str(config))
    assert run.returncode == TOO_LITTLE_DATA and "too little data" in run.stdout
    assert not (tmp_path / "checkpoints").exists() or not list((tmp_path / "checkpoints").iterdir())


def test_length_balanced_and_spread_pairings_order_the_rejected_texts():
    from distill.dataset import LoggedPrompt, ScoredText, dpo_rows

    def text(words: int, score: float, i: int) -> ScoredText:
        return ScoredText(text=" ".join(["w"] * words) + f" {i}.", score=score, won=False,
                          finish_reason="stop" if words < 40 else "length", request_id="r", index=i)

    best = text(10, 1.0, 0)
    losers = [text(60, 0.1, 1), text(50, 0.2, 2), text(3, 0.4, 3), text(45, 0.3, 4)]  # the lowest are the longest
    prompt = LoggedPrompt(key="k", messages=[{"role": "user", "content": "q"}], prompt_text="q",
                          candidates=[best, *losers], request_ids=["r"])
    lowest = dpo_rows([prompt], DistillConfig(dpo={"max_pairs_per_prompt": 2}))
    balanced = dpo_rows([prompt], DistillConfig(dpo={"max_pairs_per_prompt": 2, "pairing": "length_balanced"}))
    assert [r["score_rejected"] for r in lowest] == [0.1, 0.2]  # both longer than the chosen text
    assert [r["score_rejected"] for r in balanced] == [0.4, 0.1]  # the shorter loser, then the lowest longer one
    spread = dpo_rows([prompt], DistillConfig(dpo={"max_pairs_per_prompt": 3, "pairing": "spread"}))
    assert [r["score_rejected"] for r in spread] == [0.1, 0.4, 0.2]  # the lowest, the nearest, the next lowest



def test_quantile_pairing_pairs_every_sample_of_the_group_rank_by_rank():
    from distill.dataset import LoggedPrompt, ScoredText, dpo_rows

    scores = [0.9, 0.8, 0.75, 0.7, 0.4, 0.3, 0.72, 0.1]
    candidates = [ScoredText(text=f"answer {i}.", score=s, won=i == 0, finish_reason="stop", request_id="r", index=i)
                  for i, s in enumerate(scores)]
    prompt = LoggedPrompt(key="k", messages=[{"role": "user", "content": "q"}], prompt_text="q",
                          candidates=candidates, request_ids=["r"])
    rows = dpo_rows([prompt], DistillConfig(dpo={"max_pairs_per_prompt": 8, "pairing": "quantile", "min_gap": 0.1}))
    pairs = [(r["score_chosen"], r["score_rejected"]) for r in rows]
    assert pairs == [(0.9, 0.1), (0.8, 0.3), (0.75, 0.4)]  # 0.72 over 0.7 is under the gap: not a pair
    capped = dpo_rows([prompt], DistillConfig(dpo={"max_pairs_per_prompt": 2, "pairing": "quantile"}))
    assert [r["score_chosen"] for r in capped] == [0.9, 0.8]

def test_on_policy_rounds_reject_only_the_adapters_own_samples_and_prefer_them_on_ties():
    from distill.dataset import LoggedPrompt, ScoredText, dpo_rows, with_samples
    from distill.sampling import Answer

    logged_candidates = [ScoredText(text=text, score=score, won=i == 0, finish_reason="stop",
                                    request_id="r", index=i)
                         for i, (text, score) in enumerate([("logged best.", 1.0), ("logged worst.", 0.0)])]
    prompt = LoggedPrompt(key="k", messages=[{"role": "user", "content": "q"}], prompt_text="q",
                          candidates=logged_candidates, request_ids=["r"])
    [pooled_round] = with_samples([prompt], [[Answer("own best.", 1.0, 3, True), Answer("own slip.", 0.5, 3, True),
                                              Answer("own cut", 0.2, 64, False)]], "round2")
    pooled = dpo_rows([pooled_round], DistillConfig(dpo={"max_pairs_per_prompt": 2}, round={"rejected": "pooled"}))
    on_policy = dpo_rows([pooled_round], DistillConfig(dpo={"max_pairs_per_prompt": 2}))  # the default
    assert {r["chosen"][0]["content"] for r in pooled} == {"logged best."}  # ties: the logged text, as before
    assert [r["rejected"][0]["content"] for r in pooled] == ["logged worst.", "own cut"]
    assert {r["chosen"][0]["content"] for r in on_policy} == {"own best."}
    assert [r["rejected"][0]["content"] for r in on_policy] == ["own cut", "own slip."]
    assert pooled_round.n1_score == prompt.n1_score == 0.5  # the base's N=1 reference: logged candidates only
    # Round 1 has no samples of its own: the logged candidates are paired as before.
    assert dpo_rows([prompt], DistillConfig()) == dpo_rows([prompt], DistillConfig(round={"rejected": "pooled"}))
