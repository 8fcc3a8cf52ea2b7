"""The promotion policy: when a canary climbs, is promoted or is rolled back. Pure: it reads numbers
from the log and returns a `Decision`; `manager.py` applies it.

**The statistic** (`gateway.stats`, the same one the eval gate uses). The reward comparison is
paired: for every incumbent request that was also answered in shadow, d = candidate's shadow
score − incumbent's best-of-N winner score on the same prompt (only incumbent requests that really
generated more than one candidate, and shadow replies at the candidate's N). The policy looks at
the pairs at planned moments only, every `pairs_per_look` pairs, at most `max_looks` times, each
look at z = Φ⁻¹(1 − alpha / max_looks), so the chance of a wrong promotion (or a wrong rollback)
stays below `alpha` across all looks (re-testing a fixed z every few seconds does not). At a look,
with the mean of d and its one-sided bounds mean ± z·sd/√pairs:
- upper bound < −margin: roll back (the candidate is confidently worse than allowed);
- lower bound ≥ −margin: climb to the next share (10 → 25 → 50 → 100 %); past the last, promote;
- otherwise hold, except at the last look, where a candidate not shown within the margin is
  rolled back (the test is truncated: production keeps the incumbent when in doubt).
Independently of the looks, the candidate is rolled back when its error rate exceeds the
incumbent's by more than max_error_rate_increase (after min_requests_rollback candidate requests).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from statistics import fmean, variance
from typing import Any

from gateway.config import RolloutConfig
from gateway.stats import LookSchedule, paired_bound
from gateway.store import Arm, ArmOutcomes, ShadowPair

INCUMBENT_ARMS = (Arm.BASE,)
CANDIDATE_ARMS = (Arm.CANDIDATE, Arm.SHADOW)  # every reply of the checkpoint during the canary


@dataclass
class ArmStats:
    requests: int  # all logged requests of the arm(s), errors included
    errors: int
    scored: int  # replies with a reward
    mean: float
    variance: float
    tokens_per_request: float

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


@dataclass
class Decision:
    action: str  # hold | advance | promote | rollback
    reason: str
    numbers: dict[str, Any]
    look: int | None = None  # the look this decision was taken at, when it was one


def arm_stats(outcomes: ArmOutcomes) -> ArmStats:
    """The policy's view of an arm: counts, error rate, reward mean and (sample) variance."""
    rewards = outcomes.rewards
    return ArmStats(requests=outcomes.requests, errors=outcomes.errors, scored=len(rewards),
                    mean=fmean(rewards) if rewards else 0.0, variance=variance(rewards) if len(rewards) > 1 else 0.0,
                    tokens_per_request=outcomes.tokens_per_request)


def look_schedule(config: RolloutConfig) -> LookSchedule:
    return LookSchedule(min_pairs=config.pairs_per_look, max_looks=config.max_looks, alpha=config.alpha)


def decide_at_look(differences: list[float], look: int, schedule: LookSchedule, margin: float) -> Decision:
    """The reward rule at planned look `look` over the paired differences (candidate − incumbent)."""
    bound = paired_bound(differences, schedule.z)
    numbers = {"look": look, "max_looks": schedule.max_looks, "margin": margin, "alpha": schedule.alpha,
               **bound.as_dict()}
    where = f"look {look}/{schedule.max_looks}, {bound.pairs} pairs: difference {bound.mean:+.4f}"
    if bound.upper < -margin:
        return Decision("rollback", f"{where}, upper bound {bound.upper:+.4f} < -{margin:g}: the candidate is "
                        "confidently worse than allowed", numbers, look)
    if bound.lower >= -margin:
        return Decision("advance", f"{where}, lower bound {bound.lower:+.4f} >= -{margin:g}", numbers, look)
    if schedule.is_last(look):
        return Decision("rollback", f"{where}, bounds [{bound.lower:+.4f}, {bound.upper:+.4f}]: not shown within "
                        f"-{margin:g} of the incumbent by the last look", numbers, look)
    return Decision("hold", f"{where}, bounds [{bound.lower:+.4f}, {bound.upper:+.4f}] straddle -{margin:g}",
                    numbers, look)


def decide(pairs: list[ShadowPair], looks_taken: int, candidate: ArmStats, incumbent: ArmStats,
           config: RolloutConfig) -> Decision:
    """The policy: the error-rate rule at any time; the reward rule only at a new planned look."""
    error_gap = candidate.error_rate - incumbent.error_rate
    if candidate.requests >= config.min_requests_rollback and error_gap > config.max_error_rate_increase:
        return Decision("rollback", f"candidate error rate {candidate.error_rate:.1%} exceeds the incumbent's "
                        f"{incumbent.error_rate:.1%} by more than {config.max_error_rate_increase:.1%}",
                        {"candidate": asdict(candidate), "incumbent": asdict(incumbent)})
    schedule = look_schedule(config)
    look = looks_taken + 1  # one look at a time, each over the first pairs_for(look) pairs
    needed = schedule.pairs_for(look)
    if len(pairs) < needed:
        return Decision("hold", f"{len(pairs)} of the {needed} shadow pairs for look {look}", {})
    return decide_at_look([p.difference for p in pairs[:needed]], look, schedule, config.margin)
