"""How much shadow evidence the rollout policy needs before it promotes a distilled checkpoint.

    python -m bench.rollout_power --workdir /path/to/bench-or-demo-workdir [--prompts 150]

The eval gate and `bench.distill_gain` measure a checkpoint on held-out prompts; the rollout
policy decides on shadow pairs (candidate N=1 against the incumbent's best-of-N on the same
prompt) with a one-sided bound split over its looks (`gateway.stats`). This benchmark asks what
that rule needs from a real checkpoint:

1. copies the workdir's log (the workdir itself is not touched; a canary left running in it is
   rolled back in the copy) and starts the gateway on the copy with the checkpoint (default: the
   newest one the gate published) as a canary at `--canary` %, every incumbent request shadowed,
   and the policy never looking on its own;
2. sends `--prompts` fresh generated prompts (seed `--seed`, none of them in the log, none with an
   instruction of `--exclude-kinds`, which `bench.distill_gain` keeps out of training);
3. replays the measured pairs through the policy's own rule (`decide_at_look`) at the demo's look
   schedule, at the product's default one, and in one look over every pair, and prints what it
   decides, and how many pairs (and minutes of this machine's traffic) a candidate with this mean
   difference and spread would need for its lower bound to clear −margin.
"""

from __future__ import annotations

import argparse
import logging
import math
import tempfile
import time
from pathlib import Path

import httpx
from pydantic import BaseModel, Field
from rich.console import Console

from bench.distill_gain import kinds
from distill.dataset import is_heldout, load_prompts
from gateway.app import create_app
from gateway.config import DistillConfig, RolloutConfig, Settings, StoreConfig, with_updates
from gateway.rollout import decide_at_look, look_schedule
from gateway.stats import LookSchedule, paired_bound
from gateway.store import Arm, RolloutState, connection, copy_database, newest_published_adapter, shadow_pairs
from tao.demo.config import DemoConfig
from tao.demo.prompts import generate_prompts
from tao.demo.run import models_at, rollout_settings, wait_for_pairs
from tao.demo.workload import send_workload
from tao.flags import add_field_flags, field_values
from tao.server_thread import serve_in_thread


class RolloutPowerConfig(BaseModel):
    """The benchmark's options."""

    workdir: Path = Field(description="A `bench.distill_gain` or `tao demo` directory: its tao.db and checkpoints.")
    checkpoint: str | None = Field(None, description="Checkpoint id; default: the newest one the gate published, "
                                   "even if it was rolled back since.")
    prompts: int = Field(150, ge=2, description="Fresh prompts sent during the canary.")
    seed: int = Field(7, description="Prompt generator seed (prompts already in the log are skipped).")
    best_of: int = Field(8, ge=2, description="The incumbent's N.")
    max_tokens: int = Field(64, ge=1, description="Tokens per answer (bench.distill_gain's default; the demo's is 48).")
    canary: float = Field(10.0, gt=0, lt=100, description="Candidate share in percent; every incumbent request is "
                          "also answered by the candidate in shadow, so a lower share gives more pairs.")
    exclude_kinds: list[str] = Field(["postscript", "title"], description="Instruction kinds left out of the prompts "
                                     "(bench.distill_gain's unseen kinds, never trained on).")
    concurrency: int = Field(8, ge=1, description="Requests in flight at once.")


def newest_adapter(db_path: Path) -> str:
    """The newest distilled adapter the gate published, whatever became of it since (a demo's may
    have been rolled back)."""
    with connection(db_path) as db:
        adapter = newest_published_adapter(db)
    if adapter is None:
        raise SystemExit(f"{db_path} has no published checkpoint to roll out: pass --checkpoint")
    return adapter


def fresh_prompts(opts: RolloutPowerConfig, logged: set[str]) -> list[str]:
    excluded = set(opts.exclude_kinds)
    pool = generate_prompts(20 * opts.prompts, seed=opts.seed)
    fresh = list(dict.fromkeys(p for p in pool if p not in logged and not kinds(p) & excluded))[:opts.prompts]
    if len(fresh) < opts.prompts:
        raise SystemExit(f"only {len(fresh)} fresh prompts from seed {opts.seed}: ask for fewer --prompts")
    return fresh


def demo_schedule(rollout: RolloutConfig) -> LookSchedule:
    """The demo's looks at its defaults: sized from its held-out prompts, as `tao demo` sizes them."""
    demo = DemoConfig()
    fraction = DistillConfig().holdout_fraction
    heldout = sum(is_heldout([{"role": "user", "content": p}], fraction)
                  for p in generate_prompts(demo.prompts, demo.seed))
    return look_schedule(rollout_settings(Settings(rollout=rollout), demo, heldout).rollout)


def replay(differences: list[float], schedule: LookSchedule, margin: float) -> list[str]:
    """The policy's decision over the measured pairs at `schedule`, look after look."""
    decision, look = None, 0
    while look < schedule.max_looks and schedule.pairs_for(look + 1) <= len(differences):
        look += 1
        decision = decide_at_look(differences[:schedule.pairs_for(look)], look, schedule, margin)
        if decision.action != "hold":
            break
    if decision is None:
        return [f"{schedule.max_looks} × {schedule.min_pairs}", f"{schedule.z:.3f}", "0", "", "", "",
                "no look: too few pairs"]
    n = decision.numbers
    return [f"{schedule.max_looks} × {schedule.min_pairs}", f"{schedule.z:.3f}", f"{n['pairs']}",
            f"{n['mean']:+.4f}", f"{n['lower']:+.4f}", f"{n['upper']:+.4f}",
            f"{decision.action} at look {look}/{schedule.max_looks}"]


def pairs_needed(mean: float, sd: float, z: float, margin: float) -> float:
    """Pairs at which mean − z·sd/√n clears −margin (inf when the mean itself is not above −margin)."""
    return math.ceil((z * sd / (mean + margin)) ** 2) if mean + margin > 0 else math.inf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_field_flags(parser, RolloutPowerConfig, "bench")
    opts = RolloutPowerConfig.model_validate(field_values(parser.parse_args(), "bench"))
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    console = Console()

    scratch = Path(tempfile.mkdtemp(prefix="tao-rollout-power-"))
    copy_database(opts.workdir / "tao.db", scratch / "tao.db")  # the canary's rows go to the copy
    checkpoint = opts.checkpoint or newest_adapter(scratch / "tao.db")
    product = RolloutConfig()
    rollout = with_updates(product, steps=[opts.canary, 100.0], shadow_fraction=1.0, check_interval_s=3600.0,
                           min_requests_rollback=10**9)
    settings = Settings(models=models_at(opts.best_of, opts.max_tokens), store=StoreConfig(path=scratch / "tao.db"),
                        rollout=rollout)
    model = settings.distill.model
    with connection(scratch / "tao.db") as db:
        logged = {p.messages[-1]["content"] for p in load_prompts(db, model)}
    prompts = fresh_prompts(opts, logged)

    console.rule(f"canary {opts.canary:g} % of {checkpoint} at N=1 against best-of-{opts.best_of}: "
                 f"{len(prompts)} fresh prompts (seed {opts.seed}), every incumbent request shadowed")
    with serve_in_thread(create_app(settings), server_config=settings.server, startup_timeout_s=600) as url:
        admin = f"{url}/admin/rollout"
        if httpx.get(admin, timeout=60).json()["rollouts"][0]["state"] == RolloutState.CANARY:
            console.print("the log holds a canary still running: rolled back in the copy first")
            httpx.post(f"{admin}/{model}/rollback", timeout=60).raise_for_status()
        httpx.post(f"{admin}/{model}/start", timeout=600,
                   json={"checkpoint": checkpoint, "canary": opts.canary, "best_of": 1}).raise_for_status()
        started = time.time()
        results = send_workload(url + "/v1", model, prompts, best_of=None, concurrency=opts.concurrency,
                                desc="canary traffic", user="power")
        wait_for_pairs(admin, sum(r.arm == Arm.BASE for r in results), console, timeout_s=600)
        traffic_s = time.time() - started
    with connection(scratch / "tao.db") as db:
        pairs = shadow_pairs(db, model, since=started, candidate_n=1)
    if len(pairs) < 2:
        raise SystemExit(f"only {len(pairs)} shadow pairs were logged (see {scratch / 'tao.db'})")
    differences = [p.difference for p in pairs]
    overall = paired_bound(differences, 0.0)
    failed = sum(r.error is not None for r in results)
    console.print(f"{len(results)} requests ({failed} failed) in {traffic_s:.0f} s, {len(pairs)} shadow pairs "
                  f"({traffic_s / len(pairs):.2f} s a pair): incumbent best-of-{opts.best_of} "
                  f"{sum(p.incumbent for p in pairs) / len(pairs):.3f}, candidate N=1 "
                  f"{sum(p.candidate for p in pairs) / len(pairs):.3f}, difference {overall.mean:+.4f}, "
                  f"sd {overall.sd:.4f}")

    schedules = [("demo", demo_schedule(product)),
                 ("product default", look_schedule(product)),
                 ("one look at every pair", LookSchedule(len(differences), 1, product.alpha))]
    print(f"\nmargin {product.margin:g}, alpha {product.alpha:g} (one-sided, split over the looks)\n")
    print("| schedule | looks × pairs | z | pairs | difference | lower | upper | decision | pairs needed | minutes |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, schedule in schedules:
        needed = pairs_needed(overall.mean, overall.sd, schedule.z, product.margin)
        minutes = f"{needed * traffic_s / len(pairs) / 60:.1f}" if math.isfinite(needed) else "never"
        print("| " + " | ".join([name, *replay(differences, schedule, product.margin), f"{needed:g}", minutes]) + " |")
    print(f"\n'pairs needed': for the lower bound at that z to clear -{product.margin:g} at this difference and sd; "
          f"'minutes': of this canary's traffic at {traffic_s / len(pairs):.2f} s a pair. Log copy: {scratch}")


if __name__ == "__main__":
    main()
