"""Which logs the next distill run reads: its window, and its held-out split (no model is loaded)."""

import json
import time
from contextlib import closing
from pathlib import Path

from distill.dataset import is_heldout, load_prompts, prompt_key, split
from distill.job import TOO_LITTLE_DATA, run_distill
from distill.publish import register
from gateway.config import DistillConfig, Settings, StoreConfig
from gateway.store import RequestLog, Store, open_database


def logged_store(path: Path, created: list[float]) -> None:
    """One scored best-of-2 chat request of smollm2 per timestamp, each with its own prompt."""
    store = Store(path)
    store.start()
    for i, at in enumerate(created):
        rid = f"r{i}"
        messages = [{"role": "user", "content": f"question {i}"}]
        store.log(RequestLog(
            request={"id": rid, "created_at": at, "model": "smollm2", "arm": "base", "endpoint": "chat",
                     "status": "ok", "messages": json.dumps(messages), "prompt": messages[0]["content"], "best_of": 2,
                     "n_generated": 2},
            candidates=[{"request_id": rid, "idx": k, "text": f"a{k}", "score": float(k), "won": k,
                         "finish_reason": "stop"}
                        for k in range(2)]))
    store.close()


def checkpoint_row(cid: str, until: float, *, method: str = "dpo", status: str = "candidate") -> dict:
    """A `checkpoints` row the way `tao distill` (method dpo) or `tao reward train` (method reward) writes it."""
    return {"id": cid, "created_at": until, "model": "smollm2", "base_model": "base", "method": method,
            "data_since": None, "data_until": until, "metrics": {}, "path": f"/checkpoints/{cid}", "status": status}


def prompts_in_window(tmp_path: Path) -> int:
    """Prompts the next `tao distill` would read (it stops at the data check: too little data)."""
    settings = Settings(store=StoreConfig(path=tmp_path / "tao.db"),
                        distill=DistillConfig(checkpoints_dir=tmp_path / "checkpoints", min_train_prompts=10_000))
    outcome = run_distill(settings)
    assert outcome.exit_code == TOO_LITTLE_DATA, outcome.message
    return outcome.counts["prompts"]


def test_a_trained_reward_model_does_not_move_the_distill_window(tmp_path: Path):
    now = time.time()
    logged_store(tmp_path / "tao.db", [now - 300, now - 200, now - 100])
    with closing(open_database(tmp_path / "tao.db")) as db:
        register(db, checkpoint_row("smollm2-dpo-1", now - 250))
    assert prompts_in_window(tmp_path) == 2
    with closing(open_database(tmp_path / "tao.db")) as db:
        register(db, checkpoint_row("reward-1", time.time(), method="reward"))  # as `tao reward train` does
    assert prompts_in_window(tmp_path) == 2


def test_a_rolled_back_checkpoints_window_is_distilled_again(tmp_path: Path):
    now = time.time()
    logged_store(tmp_path / "tao.db", [now - 300, now - 200, now - 100])
    with closing(open_database(tmp_path / "tao.db")) as db:
        register(db, checkpoint_row("smollm2-dpo-1", now - 250, status="promoted"))
        register(db, checkpoint_row("smollm2-dpo-2", now - 150, status="rolled_back"))
        register(db, checkpoint_row("smollm2-dpo-3", now - 50, status="rejected"))
    assert prompts_in_window(tmp_path) == 2  # everything after the promoted one


def test_the_held_out_split_is_the_one_earlier_versions_made(tmp_path: Path):
    """The split must not move a prompt between train and held-out across versions: a prompt trained on
    before would otherwise be scored as held out. The rule has been: the first 32 bits of the prompt
    key below the fraction (the denominator moved from 2**32 - 1 to 2**32: a prompt can only move
    if its first 32 bits are one exact value)."""
    logged_store(tmp_path / "tao.db", [float(i) for i in range(400)])
    with closing(open_database(tmp_path / "tao.db")) as db:
        prompts = load_prompts(db, "smollm2")
    for fraction in (0.1, 0.2, 0.5):
        _, heldout = split(prompts, fraction)
        before = [p for p in prompts if int(p.key[:8], 16) / 0xFFFFFFFF < fraction]
        assert heldout == before and 0 < len(heldout) < len(prompts)
    messages = [{"role": "user", "content": "hi"}]
    assert is_heldout(messages, 0.5) == (int(prompt_key(messages)[:8], 16) / 0xFFFFFFFF < 0.5)
