"""`tao reward train`: a Bradley–Terry reward model from people's feedback (and, optionally, from
confident score gaps in the logs), trained with TRL's RewardTrainer and a LoRA adapter on a small
base, saved as a merged sequence classifier that `reward: {kind: hf, path: ...}` loads.

Preference pairs:
- `preference` feedback: the preferred candidate over every other distinct candidate of the request;
- `pairwise` feedback: chosen over rejected;
- `rating` feedback: a served answer rated >= 0.5 over one rated < 0.5 for the same prompt;
- with `from_logs`: each logged prompt's best over its worst candidate when their score gap is at
  least `min_gap` (the current scorer's opinion: use it to distil a slow judge into a fast model).
Pairs are split by a stable hash of the prompt; held-out pairwise accuracy is reported. The model
is published like a checkpoint (staged, fsynced, renamed) and registered in `checkpoints` with
method `reward`: a scorer's weights, which never serve traffic and never move the distill window.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlite_utils

from distill.dataset import is_heldout, load_prompts, prompt_key
from distill.progress import show_progress
from distill.publish import move_into_place, register, staging_dir
from gateway.config import EMBEDDED_NAME
from gateway.store import REWARD_MODEL_METHOD, CheckpointStatus, FeedbackKind, connection, feedback_verdicts

log = logging.getLogger(__name__)


@dataclass
class RewardTrainOptions:
    base_model: Path
    out_dir: Path = Path("./reward_models")
    from_logs: bool = False
    model: str | None = None  # public model whose logs to use with from_logs
    min_gap: float = 0.3
    min_pairs: int = 16
    holdout_fraction: float = 0.2
    max_steps: int = 60
    batch_size: int = 8
    learning_rate: float = 5e-4
    lora_r: int = 16
    max_length: int = 512
    seed: int = 0


class TooFewPairs(RuntimeError):
    pass


def feedback_pairs(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    pairs: list[dict[str, Any]] = []
    rated: dict[str, list[tuple[float, list[dict], str]]] = {}
    for verdict in feedback_verdicts(db):
        messages, texts = verdict.messages, verdict.texts
        chosen, rejected = verdict.candidate_index, verdict.rejected_index
        if not messages or chosen is None or chosen >= len(texts):
            continue
        if verdict.kind == FeedbackKind.PREFERENCE:
            pairs += [_pair(messages, texts[chosen], other) for other in dict.fromkeys(texts) if other != texts[chosen]]
        elif (verdict.kind == FeedbackKind.PAIRWISE and rejected is not None and rejected < len(texts)
              and texts[chosen] != texts[rejected]):
            pairs.append(_pair(messages, texts[chosen], texts[rejected]))
        elif verdict.kind == FeedbackKind.RATING and verdict.rating is not None:
            rated.setdefault(prompt_key(messages), []).append((verdict.rating, messages, texts[chosen]))
    for answers in rated.values():
        good = [a for a in answers if a[0] >= 0.5]
        bad = [a for a in answers if a[0] < 0.5]
        pairs += [_pair(g[1], g[2], b[2]) for g in good for b in bad if g[2] != b[2]]
    return pairs


def log_pairs(db: sqlite_utils.Database, model: str, min_gap: float) -> list[dict[str, Any]]:
    return [_pair(p.messages, p.best.text, p.worst.text) for p in load_prompts(db, model)
            if len(p.candidates) > 1 and p.best.score - p.worst.score >= min_gap and p.best.text != p.worst.text]


def _pair(messages: list[dict], chosen: str, rejected: str) -> dict[str, Any]:
    prompt = [{"role": m["role"], "content": m.get("content") or ""} for m in messages]
    return {"prompt": prompt, "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}]}


def _accuracy(model, tokenizer, pairs: list[dict[str, Any]]) -> float:
    import torch

    def score(pair: dict, side: str) -> float:
        text = tokenizer.apply_chat_template(pair["prompt"] + pair[side], tokenize=False)
        inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False).to(model.device)
        with torch.inference_mode():
            return float(model(**inputs).logits[0, 0])

    return sum(score(p, "chosen") > score(p, "rejected") for p in pairs) / len(pairs)


def train_reward_model(db_path: Path, options: RewardTrainOptions) -> dict[str, Any]:
    """Train, evaluate, save atomically and register; returns the registered row."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    with connection(db_path) as db:
        pairs = feedback_pairs(db)
        from_feedback = len(pairs)
        if options.from_logs:
            pairs += log_pairs(db, options.model or EMBEDDED_NAME, options.min_gap)
    train = [p for p in pairs if not is_heldout(p["prompt"], options.holdout_fraction)]
    heldout = [p for p in pairs if is_heldout(p["prompt"], options.holdout_fraction)]
    if len(train) < options.min_pairs or not heldout:
        raise TooFewPairs(
            f"too few preference pairs to train a reward model: {len(train)} for training (need "
            f"{options.min_pairs}) and {len(heldout)} held out, from {from_feedback} feedback pairs"
            f"{'' if options.from_logs else ' (add --from-logs to use confident score gaps in the logs)'}. "
            "Collect more feedback with POST /v1/feedback.")

    tokenizer = AutoTokenizer.from_pretrained(options.base_model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    gpu = torch.cuda.is_available()
    model = AutoModelForSequenceClassification.from_pretrained(
        options.base_model, num_labels=1, dtype=torch.bfloat16 if gpu else torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id
    reward_id = f"reward-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:6]}"
    staging = staging_dir(options.out_dir, reward_id)
    try:
        args = RewardConfig(output_dir=str(staging / "trainer"), max_steps=options.max_steps,
                            per_device_train_batch_size=options.batch_size, learning_rate=options.learning_rate,
                            logging_steps=5, save_strategy="no", report_to=[], seed=options.seed, bf16=gpu,
                            use_cpu=not gpu, max_length=options.max_length, gradient_checkpointing=False)
        lora = LoraConfig(r=options.lora_r, lora_alpha=2 * options.lora_r, task_type="SEQ_CLS",
                          target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], modules_to_save=["score"])
        trainer = RewardTrainer(model=model, args=args, train_dataset=Dataset.from_list(train),
                                processing_class=tokenizer, peft_config=lora)
        show_progress(trainer, "reward model training", verbose=False)
        trainer.train()
        merged = trainer.model.merge_and_unload().eval()
        accuracy = _accuracy(merged, tokenizer, heldout)
        merged.save_pretrained(staging / "model")
        tokenizer.save_pretrained(staging / "model")
        metrics = {"heldout_pairwise_accuracy": accuracy, "train_pairs": len(train), "heldout_pairs": len(heldout),
                   "feedback_pairs": from_feedback, "from_logs": options.from_logs, "steps": options.max_steps}
        row = {"id": reward_id, "created_at": time.time(), "model": options.model or "",
               "base_model": str(options.base_model), "method": REWARD_MODEL_METHOD, "data_since": None,
               "data_until": time.time(), "metrics": metrics, "path": str(options.out_dir / reward_id / "model"),
               "status": CheckpointStatus.CANDIDATE}
        (staging / "tao_reward_model.json").write_text(json.dumps(row, indent=2, default=str))
        move_into_place(staging, options.out_dir, reward_id)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    with connection(db_path) as db:
        register(db, row)
    return row
