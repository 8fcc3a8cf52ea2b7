"""Logs → training data. Reads the log's best-of-N candidates (`gateway.store.scored_chat_candidates`,
which holds the one definition of what is kept: base-arm `ok` chat requests that generated more
than one candidate), groups them into prompts, splits by a stable hash of the prompt, and builds
one dataset per method in TRL's conversational formats.

- Reference numbers, the gate's and the demo report's and nothing else: `best_of_n_score` averages
  each request's winner (top score, lowest index on ties, as the gateway selects): what best-of-N
  served. `n1_score` averages every logged candidate: each is an independent draw of the base model
  at the served sampling settings, so each is what N=1 could have served. The first candidate alone
  is as unbiased, but its expectation given the N scores is their mean: the mean is the same
  estimate from N times the samples (on 28 held-out prompts the first read 0.04–0.07 below it on
  three of four benchmark logs, noise that went straight into the recovered share).
- Deduplicated: identical message lists are one prompt; their requests' candidates are pooled for
  training.
- Held out: a prompt whose stable hash (`gateway.buckets.stable_fraction` of its canonical
  messages) falls under `holdout_fraction` is never trained on (the same across runs and machines,
  so a prompt never moves between train and held-out).
- Targets (SFT completions, DPO chosen) ended on their own (`finish_reason == "stop"`): a
  candidate cut at `max_tokens` would teach the model to stop mid-sentence. It may still be rejected.
- SFT: prompt → its best ended candidates (up to `sft.targets_per_prompt`, distinct texts), each
  beating the prompt's mean score by `sft.margin`.
- DPO: the best ended candidate (chosen) over every distinct candidate at least `dpo.min_gap`
  below it (rejected), at most `dpo.max_pairs_per_prompt` pairs per prompt, lowest scores first
  (`dpo.pairing` may interleave shorter and longer ones, or the lowest and the nearest).
  In an iterated round with `round.rejected: policy`, only the adapter's own new samples are
  rejected (on-policy negatives: what it still gets wrong), and on equal scores its own sample is
  the chosen one.
- GRPO: the prompts alone (the trainer samples and scores online with the same scorer).
Scores are recomputable offline: `rescore` applies a (new) scorer to the logged candidates.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import sqlite_utils

from gateway.buckets import stable_fraction
from gateway.config import DistillConfig
from gateway.rewards import Scorer
from gateway.store import scored_chat_candidates


@dataclass
class ScoredText:
    text: str
    score: float
    won: bool  # as logged (under the scorer that served the request)
    finish_reason: str | None = None
    tokens: int | None = None
    request_id: str = ""
    index: int = 0
    policy: bool = False  # sampled from the adapter being trained (an iterated round), not logged
    message: dict[str, Any] | None = None  # the logged assistant message where it holds tool calls

    @property
    def said(self) -> str:
        """What the answer says, its tool calls included: equal answers are one answer."""
        return json.dumps(self.as_turn(), sort_keys=True) if self.message else self.text

    def as_turn(self) -> list[dict[str, Any]]:
        """The assistant turn to learn: the message with its tool calls, else the text."""
        if self.message and self.message.get("tool_calls"):
            return [{"role": "assistant", "content": self.message.get("content") or "",
                     "tool_calls": self.message["tool_calls"]}]
        return [{"role": "assistant", "content": self.text}]

    @property
    def ended(self) -> bool:
        """It stopped on its own (end of turn or a stop sequence), not at `max_tokens`."""
        return self.finish_reason == "stop"


@dataclass
class LoggedPrompt:
    key: str
    messages: list[dict[str, Any]]
    prompt_text: str
    candidates: list[ScoredText] = field(default_factory=list)
    request_ids: list[str] = field(default_factory=list)
    completion_tokens: list[int] = field(default_factory=list)  # per request: all candidates together
    tools: list[dict[str, Any]] | None = None  # the tools its requests offered

    @property
    def uses_tools(self) -> bool:
        """Its requests offered tools, its conversation holds tool calls or results, or an answer calls one:
        learnable only through a chat template that renders the tools (`renders_tools`)."""
        return bool(self.tools) or any(m.get("tool_calls") or m.get("role") == "tool" for m in self.messages) \
            or any(c.message and c.message.get("tool_calls") for c in self.candidates)

    def by_request(self) -> list[list[ScoredText]]:
        """The candidates of each logged request, in generation order."""
        groups: dict[str, list[ScoredText]] = {}
        for c in self.candidates:
            groups.setdefault(c.request_id, []).append(c)
        return [sorted(group, key=lambda c: c.index) for group in groups.values()]

    @property
    def best(self) -> ScoredText:
        return max(self.candidates, key=lambda c: c.score)

    @property
    def worst(self) -> ScoredText:
        return min(self.candidates, key=lambda c: c.score)

    def winners(self) -> list[ScoredText]:
        """Each request's winner: top score, lowest index on ties (as the gateway selects)."""
        return [min(group, key=lambda c: (-c.score, c.index)) for group in self.by_request()]

    def firsts(self) -> list[ScoredText]:
        """Each request's first candidate: what the base model would have served at N=1."""
        return [group[0] for group in self.by_request()]

    def targets(self, k: int = 1, prefer_policy: bool = False) -> list[ScoredText]:
        """Up to `k` distinct candidates that ended on their own, best first: what may be learnt.
        `prefer_policy`: on equal scores the adapter's own sample comes first (the likelier text)."""
        seen: set[str] = set()
        picked = []
        for c in sorted(self.candidates, key=lambda c: (-c.score, prefer_policy and not c.policy)):
            if (c.ended or c.finish_reason == "tool_calls") and (c.text.strip() or c.message) and c.said not in seen:
                seen.add(c.said)
                picked.append(c)
                if len(picked) == k:
                    break
        return picked

    @property
    def mean_score(self) -> float:
        return sum(c.score for c in self.candidates) / len(self.candidates)

    def n1_samples(self) -> list[ScoredText]:
        """Every logged candidate (not the adapter's samples): each is a draw of the base model at N=1."""
        return [c for c in self.candidates if not c.policy]

    @property
    def n1_score(self) -> float | None:
        """The base model's mean N=1 reward on this prompt, over all its logged candidates."""
        scores = [c.score for c in self.n1_samples()]
        return sum(scores) / len(scores) if scores else None

    @property
    def best_of_n_score(self) -> float | None:
        """Mean over requests of the winner's score: what best-of-N served (under the current scores)."""
        winners = [c.score for c in self.winners()]
        return sum(winners) / len(winners) if winners else None


def _canonical(messages: list[dict[str, Any]]) -> str:
    """What makes two prompts the same: roles and contents, in order."""
    return json.dumps([{"role": m.get("role"), "content": m.get("content")} for m in messages], sort_keys=True)


def prompt_key(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> str:
    """Identical conversations are one prompt; with other tools on offer, they are another."""
    text = _canonical(messages) + (json.dumps(tools, sort_keys=True) if tools else "")
    return hashlib.sha256(text.encode()).hexdigest()


def is_heldout(messages: list[dict[str, Any]], fraction: float) -> bool:
    return stable_fraction(_canonical(messages)) < fraction


def load_prompts(
    db: sqlite_utils.Database, model: str, *, since: float | None = None, until: float | None = None,
    with_tools: bool = False,
) -> list[LoggedPrompt]:
    """`model`'s logged best-of-N prompts in [since, until), deduplicated, oldest first. Prompts that use
    tools are left out unless `with_tools` (what reads only text, a scorer or a reward model, must not
    see a tool call as an empty answer)."""
    prompts: dict[str, LoggedPrompt] = {}
    for row in scored_chat_candidates(db, model, since=since, until=until):
        key = prompt_key(row.messages, row.tools)
        entry = prompts.setdefault(key, LoggedPrompt(key=key, messages=row.messages, prompt_text=row.prompt or "",
                                                     tools=row.tools))
        if row.request_id not in entry.request_ids:
            entry.request_ids.append(row.request_id)
            entry.completion_tokens.append(int(row.completion_tokens or 0))
        entry.candidates.append(ScoredText(text=row.text or "", score=row.score, won=row.won,
                                           finish_reason=row.finish_reason, tokens=row.tokens,
                                           request_id=row.request_id, index=row.idx, message=row.message))
    return [p for p in prompts.values() if with_tools or not p.uses_tools]


PROBE_TOOL = {"type": "function", "function": {"name": "tao_probe_tool", "description": "probe",
                                               "parameters": {"type": "object", "properties": {}}}}


def renders_tools(tokenizer: Any) -> bool:
    """Does this tokenizer's chat template show the model the tools (a probe tool's name appears)?
    Templates without tool support ignore `tools` silently; training through one would teach tool
    calls without their definitions."""
    turn = [{"role": "user", "content": "hi"}]
    try:
        return "tao_probe_tool" in tokenizer.apply_chat_template(turn, tools=[PROBE_TOOL], tokenize=False)
    except Exception:  # noqa: BLE001 - a template that fails on tools cannot render them
        return False


def rescore(prompts: list[LoggedPrompt], scorer: Scorer) -> list[LoggedPrompt]:
    """Replace the logged scores with `scorer`'s, in place (a changed scorer need not regenerate the
    traffic). Each request is scored as one group, as the gateway scores it."""

    async def score_all() -> None:
        for p in prompts:
            for group in p.by_request():
                for c, value in zip(group, await scorer.score(p.prompt_text, [c.text for c in group])):
                    c.score = float(value)

    asyncio.run(score_all())
    return prompts


def with_samples(prompts: list[LoggedPrompt], samples: list[list[Any]], tag: str) -> list[LoggedPrompt]:
    """Copies of `prompts`, each with one more "request": the policy's scored `samples` for it
    (objects with text, score, tokens and ended), an iterated round's data. The log is not changed."""
    out = []
    for p, answers in zip(prompts, samples):
        request_id = f"{tag}-{p.key[:12]}"
        extra = [ScoredText(text=a.text, score=a.score, won=False,
                            finish_reason="stop" if a.ended else "length", tokens=a.tokens, request_id=request_id,
                            index=i, policy=True) for i, a in enumerate(answers)]
        out.append(replace(p, candidates=[*p.candidates, *extra], request_ids=[*p.request_ids, request_id]))
    return out


def split(prompts: Iterable[LoggedPrompt], fraction: float) -> tuple[list[LoggedPrompt], list[LoggedPrompt]]:
    """(train, held-out) by the stable prompt hash."""
    train, heldout = [], []
    for p in prompts:
        (heldout if is_heldout(p.messages, fraction) else train).append(p)
    return train, heldout


def _with_tools(row: dict[str, Any], prompt: LoggedPrompt) -> dict[str, Any]:
    """A row, with the tools its prompt offered (TRL renders them with the chat template)."""
    return {**row, "tools": prompt.tools} if prompt.tools else row


def sft_rows(prompts: Iterable[LoggedPrompt], config: DistillConfig) -> list[dict[str, Any]]:
    rows = []
    for p in prompts:
        if len(p.candidates) < 2:
            continue
        mean = p.mean_score
        for target in p.targets(config.sft.targets_per_prompt):
            if target.score - mean >= config.sft.margin:
                rows.append(_with_tools({"prompt": p.messages, "completion": target.as_turn()}, p))
    return rows


def dpo_rows(prompts: Iterable[LoggedPrompt], config: DistillConfig) -> list[dict[str, Any]]:
    on_policy = config.round.rejected == "policy"
    rows = []
    for p in prompts:
        if len(p.candidates) < 2:
            continue
        own = [c for c in p.candidates if c.policy]
        rejectable = own if on_policy and own else p.candidates
        pairs = (_quantile_pairs(p, rejectable, on_policy, config) if config.dpo.pairing == "quantile"
                 else _best_pairs(p, rejectable, on_policy, config))
        for chosen, rejected in pairs[:config.dpo.max_pairs_per_prompt]:
            rows.append(_with_tools({"prompt": p.messages, "chosen": chosen.as_turn(), "rejected": rejected.as_turn(),
                                     "score_chosen": chosen.score, "score_rejected": rejected.score}, p))
    return rows


def _distinct_below(best: ScoredText, rejectable: list[ScoredText], config: DistillConfig) -> list[ScoredText]:
    """Distinct texts at least `dpo.min_gap` below `best`, lowest first."""
    below: dict[str, ScoredText] = {}
    for c in sorted(rejectable, key=lambda c: c.score):
        if best.score - c.score >= config.dpo.min_gap and c.said != best.said:
            below.setdefault(c.said, c)
    return list(below.values())


def _best_pairs(p: LoggedPrompt, rejectable: list[ScoredText], on_policy: bool,
                config: DistillConfig) -> list[tuple[ScoredText, ScoredText]]:
    """The best ended candidate over the texts `dpo.pairing` picks below it."""
    chosen = p.targets(1, prefer_policy=on_policy)
    if not chosen:
        return []
    return [(chosen[0], worse) for worse in _pick_rejected(chosen[0], _distinct_below(chosen[0], rejectable, config),
                                                           config)]


def _quantile_pairs(p: LoggedPrompt, rejectable: list[ScoredText], on_policy: bool,
                    config: DistillConfig) -> list[tuple[ScoredText, ScoredText]]:
    """Group-relative pairs over every sample: the i-th best ended text of the upper half over the
    i-th lowest of the rest, while they are `dpo.min_gap` apart. Best-over-lowest pairs use two or
    three of a prompt's eight samples; these use all of them, and the second-best answer teaches as
    well as the best where both beat the group."""
    tops = p.targets(max(len(p.candidates) // 2, 1), prefer_policy=on_policy)
    taken = {c.said for c in tops}
    bottoms = [c for c in _distinct_below(tops[0], rejectable, config) if c.said not in taken] if tops else []
    return [(top, low) for top, low in zip(tops, bottoms) if top.score - low.score >= config.dpo.min_gap]


def _pick_rejected(best: ScoredText, below: list[ScoredText], config: DistillConfig) -> list[ScoredText]:
    """The rejected texts for `best`, lowest score first. With `dpo.pairing: length_balanced`, shorter
    and longer ones alternate, so the pairs do not teach "shorter wins" where the logged losers are
    mostly answers cut at max_tokens (the longest). With `spread`, the lowest and the nearest below
    the gap alternate: a near miss differs from the best mostly in one instruction, so its pair
    points at that instruction rather than at every fault at once."""
    if config.dpo.pairing == "lowest":
        return below
    if config.dpo.pairing == "spread":
        return [c for pair in zip(below, reversed(below)) for c in pair][:len(below)]
    size = len(best.text.split())
    shorter = [c for c in below if len(c.text.split()) < size]
    longer = [c for c in below if len(c.text.split()) >= size]
    mixed = [c for pair in zip(shorter, longer) for c in pair]
    return mixed + shorter[len(mixed) // 2:] + longer[len(mixed) // 2:]


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
