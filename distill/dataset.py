"""Logs → training data. Reads the log's scored candidates (`gateway.store.scored_chat_candidates`),
groups them into prompts, splits by a stable hash of the prompt, and builds one dataset per method in
TRL's conversational formats.

- Kept: chat requests with status `ok` (failed and degraded rows are dropped: a degraded reply
  has no scores), for one public model, at least one scored candidate, in the time window.
- Deduplicated: identical message lists are one prompt; their candidates are pooled.
- Held out: a prompt whose stable hash (`gateway.buckets.stable_fraction` of its canonical
  messages) falls under `holdout_fraction` is never trained on (the same across runs and machines,
  so a prompt never moves between train and held-out).
- SFT: prompt → winner, where the winner beats the prompt's mean score by `sft_margin`.
- DPO: winner (chosen) vs lowest-scored candidate (rejected), where the gap ≥ `dpo_min_gap`.
- GRPO: the prompts alone (the trainer samples and scores online with the same scorer).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlite_utils

from gateway.buckets import stable_fraction
from gateway.config import DistillConfig
from gateway.store import scored_chat_candidates


@dataclass
class ScoredText:
    text: str
    score: float
    first: bool  # the first candidate of its request: an unbiased N=1 sample of the base model
    won: bool


@dataclass
class LoggedPrompt:
    key: str
    messages: list[dict[str, Any]]
    prompt_text: str
    candidates: list[ScoredText] = field(default_factory=list)
    request_ids: list[str] = field(default_factory=list)
    completion_tokens: list[int] = field(default_factory=list)  # per request: all candidates together

    @property
    def best(self) -> ScoredText:
        return max(self.candidates, key=lambda c: c.score)

    @property
    def worst(self) -> ScoredText:
        return min(self.candidates, key=lambda c: c.score)

    @property
    def mean_score(self) -> float:
        return sum(c.score for c in self.candidates) / len(self.candidates)

    @property
    def n1_score(self) -> float | None:
        """Mean score of first candidates: what the base model served at N=1."""
        firsts = [c.score for c in self.candidates if c.first]
        return sum(firsts) / len(firsts) if firsts else None

    @property
    def best_of_n_score(self) -> float | None:
        """Mean score of the candidates that won: what best-of-N served."""
        won = [c.score for c in self.candidates if c.won]
        return sum(won) / len(won) if won else None


def _canonical(messages: list[dict[str, Any]]) -> str:
    """What makes two prompts the same: roles and contents, in order."""
    return json.dumps([{"role": m.get("role"), "content": m.get("content")} for m in messages], sort_keys=True)


def prompt_key(messages: list[dict[str, Any]]) -> str:
    return hashlib.sha256(_canonical(messages).encode()).hexdigest()


def is_heldout(messages: list[dict[str, Any]], fraction: float) -> bool:
    return stable_fraction(_canonical(messages)) < fraction


def load_prompts(
    db: sqlite_utils.Database, model: str, *, since: float | None = None, until: float | None = None
) -> list[LoggedPrompt]:
    """Scored chat prompts of `model` in [since, until), deduplicated, oldest first."""
    prompts: dict[str, LoggedPrompt] = {}
    for row in scored_chat_candidates(db, model, since=since, until=until):
        key = prompt_key(row.messages)
        entry = prompts.setdefault(key, LoggedPrompt(key=key, messages=row.messages, prompt_text=row.prompt or ""))
        if row.request_id not in entry.request_ids:
            entry.request_ids.append(row.request_id)
            entry.completion_tokens.append(int(row.completion_tokens or 0))
        entry.candidates.append(ScoredText(text=row.text or "", score=row.score, first=row.idx == 0, won=row.won))
    return list(prompts.values())


def split(prompts: Iterable[LoggedPrompt], fraction: float) -> tuple[list[LoggedPrompt], list[LoggedPrompt]]:
    """(train, held-out) by the stable prompt hash."""
    train, heldout = [], []
    for p in prompts:
        (heldout if is_heldout(p.messages, fraction) else train).append(p)
    return train, heldout


def _assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def sft_rows(prompts: Iterable[LoggedPrompt], config: DistillConfig) -> list[dict[str, Any]]:
    return [
        {"prompt": p.messages, "completion": _assistant(p.best.text)}
        for p in prompts
        if len(p.candidates) > 1 and p.best.score - p.mean_score >= config.sft_margin
    ]


def dpo_rows(prompts: Iterable[LoggedPrompt], config: DistillConfig) -> list[dict[str, Any]]:
    rows = []
    for p in prompts:
        best, worst = p.best, p.worst
        if len(p.candidates) > 1 and best.score - worst.score >= config.dpo_min_gap and best.text != worst.text:
            rows.append({"prompt": p.messages, "chosen": _assistant(best.text), "rejected": _assistant(worst.text),
                         "score_chosen": best.score, "score_rejected": worst.score})
    return rows


def grpo_rows(prompts: Iterable[LoggedPrompt], config: DistillConfig) -> list[dict[str, Any]]:
    return [{"prompt": p.messages} for p in prompts]


def raw_rows(prompts: Iterable[LoggedPrompt], config: DistillConfig) -> list[dict[str, Any]]:
    return [{"prompt": p.messages, "candidates": [c.__dict__ for c in p.candidates], "request_ids": p.request_ids}
            for p in prompts]


BUILDERS = {"sft": sft_rows, "dpo": dpo_rows, "grpo": grpo_rows, "raw": raw_rows}


def build_rows(method: str, prompts: Iterable[LoggedPrompt], config: DistillConfig) -> list[dict[str, Any]]:
    return BUILDERS[method](prompts, config)


def to_dataset(rows: list[dict[str, Any]]):
    """A `datasets.Dataset` for TRL (imported here: datasets is heavy and only training needs it)."""
    from datasets import Dataset

    return Dataset.from_list(rows)


def write_jsonl(rows: Iterable[dict[str, Any]], path: Path) -> int:
    count = 0
    with path.open("w") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count
