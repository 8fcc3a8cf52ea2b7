"""The eval gate: on held-out prompts, the new checkpoint at N=1 against the base, paired per prompt.

Samples come from the path the gateway serves with: the local backend, the checkpoint loaded as
the rollout loads it (merged into a copy of the base weights), the model's temperature, top_p and
max_tokens, `eval_samples` answers per prompt for each of base and new with the same seeds, each
answer scored alone as an N=1 reply is. Two paired comparisons, each a one-sided bound from
`gateway.stats` (the statistic the rollout policy uses):

- new N=1 − base N=1 (sampled now): the checkpoint must improve on what it was trained from;
- new N=1 − logged best-of-N winners of the same prompts: the rollout's own hypothesis (candidate
  N=1 against the incumbent's best-of-N, within `rollout.margin`), so the gate does not publish a
  checkpoint the policy is sure to roll back.

    gain recovered = (new N=1 − base N=1) / (logged best-of-N − logged N=1)

i.e. the share of the uplift best-of-N gave in production that the checkpoint gives at N=1; its
interval is the first bound divided by the logged uplift.

**The cheapest arm.** The `eval_samples` answers per prompt also say what the checkpoint would
score at best-of-k: the expected maximum of k of them, drawn without replacement (an unbiased
estimate from the same samples, scored by the same scorer). For k = 1, 2, 4, … up to the samples,
each is compared per prompt with the logged best-of-N; the rollout serves at the smallest k the
rollout's plan has the power to show within `rollout.margin` (`chosen_best_of`), and the gate's
second bound is taken at that k: the rollout's hypothesis is about the arm it will serve.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
import math
from math import comb
from pathlib import Path
from statistics import mean, variance
from typing import Any

from tqdm.auto import tqdm

from distill.dataset import LoggedPrompt
from distill.sampling import Answer, PolicySampler
from gateway.config import ModelConfig
from gateway.rewards import Scorer
from gateway.sequential import SequentialPlan
from gateway.stats import PairedBound, paired_bound
from gateway.store import Incumbent

EVAL_ADAPTER = "evaluated"
INCUMBENT_ADAPTER = "incumbent"


def best_of_law(scores: Sequence[float], k: int) -> tuple[float, float]:
    """Mean and variance of the best of k answers drawn without replacement from `scores`: the i-th
    smallest score is the best of exactly C(i, k−1) of the C(m, k) subsets (i counted from 0)."""
    ordered = sorted(scores)
    weights = [comb(i, k - 1) / comb(len(ordered), k) for i in range(len(ordered))]
    mean_ = sum(w * x for w, x in zip(weights, ordered))
    return mean_, max(sum(w * x * x for w, x in zip(weights, ordered)) - mean_ * mean_, 0.0)


def best_of_ks(samples: int) -> list[int]:
    """The k a gate with `samples` answers per prompt can estimate: 1, 2, 4, … up to `samples`."""
    return [2 ** i for i in range(samples.bit_length()) if 2 ** i <= samples]


def share_recovered(gain: float, uplift: float) -> float | None:
    """The share of best-of-N's uplift over N=1 that an N=1 `gain` recovers; None without an uplift."""
    return gain / uplift if uplift > 1e-9 else None


@dataclass
class PromptResult:
    """One held-out prompt: its logged references and the answers sampled now."""

    prompt: str
    logged_n1: float | None
    logged_best_of_n: float | None
    base: list[Answer] = field(default_factory=list)
    new: list[Answer] = field(default_factory=list)

    @property
    def base_score(self) -> float:
        """The base model's mean N=1 reward on this prompt, over its samples."""
        return mean(a.score for a in self.base)

    @property
    def new_score(self) -> float:
        """The distilled model's mean N=1 reward on this prompt, over its samples."""
        return mean(a.score for a in self.new)


@dataclass
class EvalReport:
    prompts: int
    samples_per_prompt: int
    base_n1_logged: float
    base_best_of_n_logged: float
    base_n1: float
    new_n1: float
    base_tokens_per_answer_logged: float  # all candidates of a best-of-N request
    new_tokens_per_answer: float
    versus_base: PairedBound  # new N=1 − base N=1, per prompt
    versus_best_of_n: PairedBound  # new N=1 − logged best-of-N, per prompt
    base_truncated: float = 0.0  # share of sampled answers cut at max_tokens
    new_truncated: float = 0.0
    results: list[PromptResult] = field(default_factory=list)
    best_of_k: dict[int, float] = field(default_factory=dict)  # new best-of-k reward, estimated from the samples
    best_of_k_versus_best_of_n: dict[int, PairedBound] = field(default_factory=dict)  # per prompt, vs logged
    # sd of one rollout pair at k (one best-of-k reply against one logged best-of-N winner): the spread of
    # the per-prompt differences plus the spread of a best-of-k draw within its prompt
    best_of_k_pair_sd: dict[int, float] = field(default_factory=dict)
    # what the base arm sampled: the base weights, or a promoted checkpoint the new one would replace
    reference: str = "base"

    @property
    def reference_arm(self) -> str:
        """The base arm's name in a sentence: "base", or "incumbent" for a promoted checkpoint."""
        return "base" if self.reference == "base" else "incumbent"

    def chosen_best_of(self, plan: SequentialPlan) -> int:
        """The cheapest arm: the smallest k predicted to hold the logged best-of-N within the plan's
        margin with the power to show it (≥ 80 % by `plan.power`). When no k has that power, the k
        with the most (the cheaper on a tie): an arm the plan cannot decide is rolled back at its last
        look, however good it is."""
        bounds = sorted(self.best_of_k_versus_best_of_n.items())
        if not bounds:
            return 1
        power = {k: plan.power(b.mean, self.best_of_k_pair_sd.get(k, b.sd)) for k, b in bounds}
        shown = [k for k, _ in bounds if power[k] >= 0.8]
        return shown[0] if shown else max(power, key=lambda k: (power[k], -k))

    @property
    def uplift(self) -> float:
        return self.base_best_of_n_logged - self.base_n1_logged

    @property
    def gain_recovered(self) -> float | None:
        return share_recovered(self.new_n1 - self.base_n1, self.uplift)

    @property
    def gain_recovered_interval(self) -> tuple[float, float] | None:
        lower = share_recovered(self.versus_base.lower, self.uplift)
        return None if lower is None else (lower, share_recovered(self.versus_base.upper, self.uplift))

    def as_dict(self) -> dict[str, Any]:
        scalars = {k: getattr(self, k) for k in ("reference", "prompts", "samples_per_prompt", "base_n1_logged",
                                                 "base_best_of_n_logged", "base_n1", "new_n1",
                                                 "base_tokens_per_answer_logged", "new_tokens_per_answer",
                                                 "base_truncated", "new_truncated")}
        return {**scalars, "gain_recovered": self.gain_recovered,
                "gain_recovered_interval": self.gain_recovered_interval,
                "versus_base": self.versus_base.as_dict(), "versus_best_of_n": self.versus_best_of_n.as_dict(),
                "best_of_k": {str(k): {"reward": reward, "tokens_per_answer": k * self.new_tokens_per_answer,
                                       "versus_best_of_n": self.best_of_k_versus_best_of_n[k].as_dict(),
                                       "pair_sd": self.best_of_k_pair_sd.get(k)}
                              for k, reward in self.best_of_k.items()}}


@dataclass(frozen=True)
class GateVerdict:
    publish: bool
    reason: str


def gate(report: EvalReport, gate_margin: float, rollout_margin: float, best_of: int = 1) -> GateVerdict:
    """Publish when the checkpoint is shown better than the base (or the promoted incumbent) at N=1 by
    more than `gate_margin`, and not shown worse than best-of-N by more than the rollout's margin when
    it serves at `best_of`."""
    reference = report.reference_arm
    vs_base = report.versus_base
    vs_bon = report.best_of_k_versus_best_of_n.get(best_of, report.versus_best_of_n)
    arm = f"new best-of-{best_of}" if best_of > 1 else "new N=1"
    if vs_base.lower <= gate_margin:
        return GateVerdict(False, f"new N=1 − {reference} N=1 is {vs_base.mean:+.4f} (lower bound {vs_base.lower:+.4f} "
                           f"over {vs_base.pairs} prompts): not shown above {gate_margin:g}")
    if vs_bon.pairs and vs_bon.upper < -rollout_margin:
        return GateVerdict(False, f"{arm} − logged best-of-N is {vs_bon.mean:+.4f} (upper bound "
                           f"{vs_bon.upper:+.4f}): the rollout policy would roll it back (margin {rollout_margin:g})")
    return GateVerdict(True, f"new N=1 − {reference} N=1 {vs_base.mean:+.4f} (lower bound {vs_base.lower:+.4f}); "
                       f"{arm} − best-of-N {vs_bon.mean:+.4f} [{vs_bon.lower:+.4f}, {vs_bon.upper:+.4f}]")


async def _evaluate(sampler: PolicySampler, heldout: list[LoggedPrompt], samples: int, seed: int,
                    reference: str | None) -> list[PromptResult]:
    async with sampler:
        results = []
        with tqdm(total=len(heldout), desc=f"eval: {reference or 'base'} and new N=1 × {samples}",
                  unit="prompt") as progress:
            for i, chunk in enumerate(sampler.chunks(heldout, samples)):
                # The same seed for both arms: common random numbers for the paired comparison.
                base = await sampler.answers(chunk, samples, seed + i, reference)
                new = await sampler.answers(chunk, samples, seed + i, EVAL_ADAPTER)
                results += [PromptResult(prompt=p.prompt_text, logged_n1=p.n1_score,
                                         logged_best_of_n=p.best_of_n_score, base=b, new=n)
                            for p, b, n in zip(chunk, base, new)]
                progress.update(len(chunk))
        return results


def evaluate(base_dir: Path, adapter_dir: Path, heldout: list[LoggedPrompt], scorer: Scorer,
             sampling: ModelConfig, samples: int, seed: int, z: float,
             incumbent: Incumbent | None = None, on_serving: bool = False) -> EvalReport:
    """Sample, score and compare; `z` is the one-sided quantile of both bounds. With `incumbent`
    (a promoted checkpoint), the base arm is that checkpoint: the new one must improve on what
    serves now, not on the weights it once started from."""
    adapters = {EVAL_ADAPTER: adapter_dir, **({INCUMBENT_ADAPTER: Path(incumbent.adapter_path)} if incumbent else {})}
    sampler = PolicySampler(base_dir, sampling, scorer, adapters, on_serving=on_serving)
    results = asyncio.run(_evaluate(sampler, heldout, samples, seed, INCUMBENT_ADAPTER if incumbent else None))
    report = summarize(results, samples, z, logged_tokens=[t for p in heldout for t in p.completion_tokens])
    return replace(report, reference=incumbent.checkpoint_id) if incumbent else report


def summarize(results: list[PromptResult], samples: int, z: float, logged_tokens: list[int]) -> EvalReport:
    """The report over per-prompt results: means, truncation, and the two paired bounds."""
    base = [r.base_score for r in results]
    new = [r.new_score for r in results]
    with_best = [(n, r.logged_best_of_n) for n, r in zip(new, results) if r.logged_best_of_n is not None]
    logged_n1 = [r.logged_n1 for r in results if r.logged_n1 is not None]
    base_answers = [a for r in results for a in r.base]
    new_answers = [a for r in results for a in r.new]
    ks = best_of_ks(min((len(r.new) for r in results), default=0))
    laws = {k: [best_of_law([a.score for a in r.new], k) for r in results] for k in ks}
    best_of_k = {k: [m for m, _ in values] for k, values in laws.items()}
    versus = {k: [(m - r.logged_best_of_n, v) for (m, v), r in zip(values, results) if r.logged_best_of_n is not None]
              for k, values in laws.items()}
    return EvalReport(
        prompts=len(results),
        samples_per_prompt=samples,
        base_n1_logged=mean(logged_n1) if logged_n1 else 0.0,
        base_best_of_n_logged=mean(b for _, b in with_best) if with_best else 0.0,
        base_n1=mean(base) if base else 0.0,
        new_n1=mean(new) if new else 0.0,
        base_tokens_per_answer_logged=mean(logged_tokens) if logged_tokens else 0.0,
        new_tokens_per_answer=mean(a.tokens for a in new_answers) if new_answers else 0.0,
        versus_base=paired_bound([n - b for n, b in zip(new, base)], z),
        versus_best_of_n=paired_bound([n - b for n, b in with_best], z),
        base_truncated=mean(not a.ended for a in base_answers) if base_answers else 0.0,
        new_truncated=mean(not a.ended for a in new_answers) if new_answers else 0.0,
        results=results,
        best_of_k={k: mean(values) for k, values in best_of_k.items()},
        best_of_k_versus_best_of_n={k: paired_bound([d for d, _ in pairs], z) for k, pairs in versus.items()},
        best_of_k_pair_sd={k: math.sqrt((variance([d for d, _ in pairs]) if len(pairs) > 1 else 0.0)
                                        + mean(v for _, v in pairs)) for k, pairs in versus.items() if pairs},
    )
