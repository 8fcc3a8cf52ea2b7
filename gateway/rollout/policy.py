"""The promotion policy: when a canary climbs, is promoted or is rolled back. Pure: it reads numbers
from the log and returns a `Decision`; `manager.py` applies it.

**The reward rule** is one group-sequential non-inferiority test (`gateway.sequential`): paired
differences d = candidate's shadow reward − incumbent's best-of-N reward on the same request, one
unit per distinct prompt (a prompt's repeats are averaged), looked at every `pairs_per_look` units,
at most `max_looks` times, with O'Brien–Fleming-type alpha spending and t boundaries. At a look:
- shown within `margin` of the incumbent (the first crossing): promote, from whatever share;
- shown worse than the margin (the harm bound): roll back;
- neither, before the last look: climb to the next share below 100 % (the ramp rides on the harm
  bound: traffic grows while harm is not shown, and no step needs a crossing of its own);
- neither at the last look: the test ends undecided and the candidate is rolled back. That is a
  rollback of a candidate that may be at parity: its chance is 1 − the power the plan has there
  (`python -m bench.rollout_sim` prints it).

**The error rule**, independent of the looks: the candidate is rolled back when its error rate
exceeds the incumbent's by more than `max_error_rate_increase` (after `min_requests_rollback`
candidate requests).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from statistics import fmean, variance
from typing import Any, Literal

from gateway.config import RolloutConfig
from gateway.sequential import SequentialPlan, clustered_difference
from gateway.store import Arm, ArmOutcomes, ShadowPair

INCUMBENT_ARMS = (Arm.BASE,)
CANDIDATE_ARMS = (Arm.CANDIDATE, Arm.SHADOW)  # every reply of the checkpoint during the canary

Action = Literal["hold", "climb", "promote", "rollback"]


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
    action: Action
    reason: str
    numbers: dict[str, Any]
    look: int | None = None  # the look this decision was taken at, when it was one


def arm_stats(outcomes: ArmOutcomes) -> ArmStats:
    """The policy's view of an arm: counts, error rate, reward mean and (sample) variance."""
    rewards = outcomes.rewards
    return ArmStats(requests=outcomes.requests, errors=outcomes.errors, scored=len(rewards),
                    mean=fmean(rewards) if rewards else 0.0, variance=variance(rewards) if len(rewards) > 1 else 0.0,
                    tokens_per_request=outcomes.tokens_per_request)


def sequential_plan(config: RolloutConfig) -> SequentialPlan:
    return SequentialPlan(units_per_look=config.pairs_per_look, max_looks=config.max_looks, alpha=config.alpha,
                          margin=config.margin)


def first_units(pairs: list[ShadowPair], units: int) -> list[ShadowPair]:
    """The pairs of the first `units` distinct prompts (in order of their first pair): a look's data.
    A later repeat of one of those prompts joins its unit; a new prompt waits for the next look."""
    kept: set[str] = set()
    for pair in pairs:
        if pair.prompt not in kept and len(kept) < units:
            kept.add(pair.prompt)
    return [pair for pair in pairs if pair.prompt in kept]


def decide_at_look(pairs: list[ShadowPair], look: int, plan: SequentialPlan) -> Decision:
    """The reward rule at planned look `look` over that look's pairs."""
    outcome = plan.look(look, clustered_difference((p.prompt, p.difference) for p in pairs))
    numbers = {**outcome.as_dict(), "alpha": plan.alpha}
    d = outcome.difference
    where = (f"look {look}/{plan.max_looks}, {d.units} prompts ({d.pairs} pairs): difference {d.mean:+.4f}, "
             f"bounds [{outcome.lower:+.4f}, {outcome.upper:+.4f}]")
    if outcome.verdict == "promote":
        return Decision("promote", f"{where}: lower bound >= -{plan.margin:g}, within the margin", numbers, look)
    if outcome.verdict == "rollback":
        return Decision("rollback", f"{where}: upper bound < -{plan.margin:g}, the candidate is confidently "
                        "worse than allowed", numbers, look)
    if outcome.verdict == "undecided":
        return Decision("rollback", f"{where}: the test ended at its last planned look without showing the "
                        f"candidate within -{plan.margin:g} of the incumbent; the incumbent stays", numbers, look)
    return Decision("climb", f"{where}: harm not shown", numbers, look)


def decide(pairs: list[ShadowPair], looks_taken: int, candidate: ArmStats, incumbent: ArmStats,
           config: RolloutConfig) -> Decision:
    """The policy: the error-rate rule at any time; the reward rule only at a new planned look."""
    error_gap = candidate.error_rate - incumbent.error_rate
    if candidate.requests >= config.min_requests_rollback and error_gap > config.max_error_rate_increase:
        return Decision("rollback", f"candidate error rate {candidate.error_rate:.1%} exceeds the incumbent's "
                        f"{incumbent.error_rate:.1%} by more than {config.max_error_rate_increase:.1%}",
                        {"candidate": asdict(candidate), "incumbent": asdict(incumbent)})
    plan = sequential_plan(config)
    look = looks_taken + 1
    if look > plan.max_looks:
        return Decision("hold", f"the test ended at look {plan.max_looks}", {})
    needed = plan.units_for(look)
    units = len({p.prompt for p in pairs})
    if units < needed:
        return Decision("hold", f"{units} of the {needed} prompts with a shadow pair for look {look}", {})
    return decide_at_look(first_units(pairs, needed), look, plan)
