"""How often the rollout policy promotes, by the true difference, over its own decision code.

    python -m bench.rollout_sim [--runs 4000] [--sd 0.35] [--seed 0]

Each run is one canary: paired differences (candidate − incumbent, one per fresh prompt) drawn
Gaussian with mean `true` and sd `--sd`, handed look after look to `gateway.rollout.decide`, the
function the gateway's policy loop calls, exactly as the loop would (one look at a time, each
over its planned number of prompts). A run ends at the first promote or rollback; the plan's last
look always decides. Printed for each schedule:

- P(promote) at true = −margin: the wrong-promotion rate, which must stay at most alpha;
- P(promote) at parity and at +0.05: the power;
- the mean number of prompts a run used.

The "before" columns are issue 27's outside simulation of the previous rule (Bonferroni z bounds,
a climb per step, 20,000 runs), for comparison; that rule is gone from the code.
"""

from __future__ import annotations

import argparse
import random
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table
from tqdm.auto import tqdm

from gateway.config import RolloutConfig
from gateway.rollout import ArmStats, decide, sequential_plan
from gateway.store import ShadowPair
from tao.demo.config import DemoConfig

# issue 27's simulation of the previous rule on the same schedules: P(promote) at -margin, parity, +0.05
BEFORE = {"default": (0.009, 0.31, 0.93), "old demo": (0.071, 0.15, 0.29)}
NO_ERRORS = ArmStats(requests=10_000, errors=0, scored=10_000, mean=0.5, variance=0.1, tokens_per_request=20.0)


@dataclass(frozen=True)
class Schedule:
    name: str
    config: RolloutConfig


def schedules() -> list[Schedule]:
    """The product's default plan, the demo's, and the demo's before issue 27 (3 looks of 6 pairs)."""
    default = RolloutConfig()
    demo = DemoConfig()
    return [Schedule("default", default),
            Schedule("demo", default.model_copy(update={"pairs_per_look": demo.prompts_per_look,
                                                        "max_looks": demo.rounds})),
            Schedule("old demo", default.model_copy(update={"pairs_per_look": 6, "max_looks": 3}))]


def run_canary(rng: random.Random, config: RolloutConfig, true: float, sd: float) -> tuple[str, int]:
    """One canary to its decision: ('promote' | 'rollback', prompts used), every pair a fresh prompt."""
    plan = sequential_plan(config)
    pairs: list[ShadowPair] = []
    for look in range(1, plan.max_looks + 1):
        while len(pairs) < plan.units_for(look):
            pairs.append(ShadowPair(request_id=str(len(pairs)), created_at=float(len(pairs)), prompt=f"p{len(pairs)}",
                                    incumbent=0.5, candidate=0.5 + true + rng.gauss(0, sd)))
        decision = decide(pairs, look - 1, NO_ERRORS, NO_ERRORS, config)
        if decision.action in ("promote", "rollback"):
            return decision.action, len(pairs)
    raise AssertionError("the last planned look always decides")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10_000, help="Canaries per cell (10,000: ±0.4 points at 5 %%).")
    parser.add_argument("--sd", type=float, default=0.35, help="sd of one paired difference (0.35: a default demo's).")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    console = Console(width=120)

    table = Table(title=f"P(promote) by true difference; {args.runs} canaries a cell, sd {args.sd}; was: the previous rule")
    for column in ("schedule", "looks×prompts", "−margin (≤α)", "was", "parity", "was", "+0.05", "was",
                   "prompts used at parity"):
        table.add_column(column, justify="right")
    for schedule in schedules():
        config, rng = schedule.config, random.Random(args.seed)
        cells, used = [], 0.0
        for true in (-config.margin, 0.0, 0.05):
            outcomes = [run_canary(rng, config, true, args.sd)
                        for _ in tqdm(range(args.runs), desc=f"{schedule.name} at {true:+.2f}", leave=False)]
            cells.append(sum(o == "promote" for o, _ in outcomes) / args.runs)
            if true == 0.0:
                used = sum(n for _, n in outcomes) / args.runs
        before = [f"{b:.1%}" for b in BEFORE[schedule.name]] if schedule.name in BEFORE else ["-"] * 3
        error = (cells[0] * (1 - cells[0]) / args.runs) ** 0.5  # Monte Carlo error of the first cell
        table.add_row(schedule.name, f"{config.max_looks} × {config.pairs_per_look}", f"{cells[0]:.1%} ± {error:.1%}",
                      before[0], f"{cells[1]:.1%}", before[1], f"{cells[2]:.1%}", before[2], f"{used:.0f}")
    console.print(table)


if __name__ == "__main__":
    main()
