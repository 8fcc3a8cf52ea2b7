"""Does the loop keep learning after a promotion? TAO's cycles on the embedded model, measured.

    python -m bench.flywheel --out /tmp/flywheel [--from DEMO_DIR] [--cycles 2] [--start-from incumbent]

Cycle 1 is `tao demo` (best-of-8 traffic, distill, rollout; skipped with `--from` a finished demo's
directory, whose log is copied). Each later cycle:
1. **traffic**: `--prompts` fresh prompts of the demo's generator (none in the log) through the
   gateway at its defaults: after a promotion the checkpoint answers at its k, and
   `--explore-fraction` of requests at best-of-8 from the checkpoint (arm explore): what users
   got from the last cycle, and the next cycle's data;
2. **distill** the log as `tao loop` does (`distill.start_from`: the promoted adapter further on
   the new data, or a new adapter on the base weights on all of it), gated against the promoted
   checkpoint;
3. **rollout** of a published checkpoint against the promoted one, as the demo rolls out, to the
   policy's decision.
A last traffic phase measures what the last cycle left serving. One table per run, `flywheel.json`
and `flywheel.png` (served reward, tokens per answer and k, per phase) in `--out`.

The served reward of a phase is the mean reward of the answers users got (not the explore arm's),
with its 95 % interval; phases use different fresh prompts of one generator, so phases compare as
samples of one distribution, not prompt by prompt.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import mean

from rich.console import Console
from rich.table import Table

from distill.dataset import load_prompts
from distill.job import PUBLISHED, run_distill
from gateway.app import create_app
from gateway.config import Settings, with_updates
from gateway.stats import paired_bound
from gateway.store import (
    Arm,
    RolloutState,
    connection,
    copy_database,
    get_checkpoint,
    get_rollout,
    newest_published_adapter,
    served_replies,
)
from tao.demo.config import DemoConfig
from tao.demo.run import _roll_out, demo_settings, fresh_prompts, run_demo
from tao.demo.workload import send_workload
from tao.server_thread import serve_in_thread


@dataclass
class Phase:
    """What one traffic phase served."""

    label: str
    serving: str  # "base" or the promoted checkpoint
    k: int  # N of the answers users got
    requests: int
    served_reward: float
    served_interval: tuple[float, float]
    tokens_per_answer: float  # completion tokens of every candidate, per answer users got
    explore_requests: int
    explore_reward: float | None  # the checkpoint's own best-of-N (the next cycle's references)


@dataclass
class Cycle:
    number: int
    started_from: str
    checkpoint: str | None
    outcome: str
    train_prompts: int
    heldout_prompts: int
    versus_incumbent: str  # new N=1 − incumbent N=1 at the gate
    best_of: int | None
    seconds: float


def phase_from_log(settings: Settings, label: str, since: float, until: float) -> Phase:
    """The phase's served answers and explore answers, read back from the log."""
    model = settings.distill.model
    with connection(settings.store.path) as db:
        rollout = get_rollout(db, model)
        replies = [r for r in served_replies(db, model, (Arm.BASE, Arm.PROMOTED, Arm.EXPLORE))
                   if since <= r.created_at < until]
    served = [r for r in replies if r.arm != Arm.EXPLORE]
    explore = [r for r in replies if r.arm == Arm.EXPLORE]
    promoted = (rollout is not None and rollout.state == RolloutState.PROMOTED
                and any(r.arm == Arm.PROMOTED for r in served))
    k = rollout.candidate_best_of if promoted else settings.model_by_name(model).best_of
    rewards = [r.score for r in served]
    bound = paired_bound(rewards, 1.96)  # mean ± 1.96 se: the two-sided 95 % interval
    low, high = (bound.lower, bound.upper) if len(rewards) > 1 else (float("nan"), float("nan"))
    return Phase(label=label, serving=rollout.checkpoint_id if promoted else "base", k=k, requests=len(served),
                 served_reward=mean(rewards) if rewards else float("nan"), served_interval=(low, high),
                 tokens_per_answer=mean(r.completion_tokens or 0 for r in served) if served else float("nan"),
                 explore_requests=len(explore), explore_reward=mean(r.score for r in explore) if explore else None)


def traffic(settings: Settings, opts: DemoConfig, prompts: int, seed: int, label: str) -> Phase:
    """Fresh prompts through the gateway at its defaults; the phase as the log recorded it."""
    with connection(settings.store.path) as db:
        known = {p.messages[-1]["content"] for p in load_prompts(db, settings.distill.model)}
    started = time.time()
    with serve_in_thread(create_app(settings), server_config=settings.server, startup_timeout_s=600) as url:
        send_workload(url + "/v1", settings.distill.model, fresh_prompts(prompts, seed, known), best_of=None,
                      concurrency=opts.concurrency, desc=label, user=f"flywheel-{seed}")
    return phase_from_log(settings, label, started, time.time())


def first_cycle(settings: Settings, opts: DemoConfig, source: Path | None, console: Console) -> tuple[Phase, Cycle]:
    """Cycle 1 (the demo, or a finished demo's log copied) and the base best-of-N traffic before it."""
    started = time.time()
    if source is not None:
        copy_database(source / "tao.db", settings.store.path)
    else:
        run_demo(opts)
    with connection(settings.store.path) as db:
        first = newest_published_adapter(db)  # cycle 1's: the only one published so far
        checkpoint = get_checkpoint(db, first) if first else None
    until = checkpoint.data_until if checkpoint else time.time()
    before = phase_from_log(settings, "before cycle 1", 0.0, until)
    eval_ = checkpoint.metrics.get("eval", {}) if checkpoint else {}
    counts = checkpoint.metrics.get("counts", {}) if checkpoint else {}
    cycle = Cycle(1, "base", checkpoint.id if checkpoint else None, str(checkpoint.status) if checkpoint else "none",
                  counts.get("train_prompts", 0), counts.get("heldout_prompts", 0),
                  _versus(eval_), checkpoint.metrics.get("best_of") if checkpoint else None,
                  time.time() - started if source is None else float("nan"))
    console.print(f"cycle 1 ({'copied from ' + str(source) if source else 'the demo'}): {cycle}")
    return before, cycle


def _versus(eval_: dict) -> str:
    bound = eval_.get("versus_base") or {}
    if not bound:
        return "-"
    return f"{bound['mean']:+.3f} [{bound['lower']:+.3f}, {bound['upper']:+.3f}] vs {eval_.get('reference', 'base')}"


def later_cycle(number: int, settings: Settings, opts: DemoConfig, console: Console) -> Cycle:
    started = time.time()
    outcome = run_distill(settings)
    console.print(outcome.message, style="green" if outcome.exit_code == PUBLISHED else "yellow")
    counts = outcome.counts
    report = outcome.report
    decision = "not published"
    if outcome.exit_code == PUBLISHED:
        decision = _roll_out(settings, opts, outcome.checkpoint_id, console)
    with connection(settings.store.path) as db:
        checkpoint = get_checkpoint(db, outcome.checkpoint_id) if outcome.checkpoint_id else None
    return Cycle(number, checkpoint.metrics.get("started_from", "base") if checkpoint else settings.distill.start_from,
                 outcome.checkpoint_id, str(checkpoint.status) if checkpoint else decision,
                 int(counts.get("train_prompts", 0)), int(counts.get("heldout_prompts", 0)),
                 _versus(report.as_dict()) if report else "-",
                 checkpoint.metrics.get("best_of") if checkpoint else None, time.time() - started)


def print_tables(phases: list[Phase], cycles: list[Cycle], console: Console) -> None:
    table = Table(title="flywheel: what users got, phase by phase")
    for column in ("phase", "serving", "k", "answers", "served reward [95 %]", "tokens / answer",
                   "explore (best-of-8 of the checkpoint)"):
        table.add_column(column)
    for p in phases:
        explore = "-" if p.explore_reward is None else f"{p.explore_reward:.3f} ({p.explore_requests})"
        table.add_row(p.label, p.serving, str(p.k), str(p.requests),
                      f"{p.served_reward:.3f} [{p.served_interval[0]:.3f}, {p.served_interval[1]:.3f}]",
                      f"{p.tokens_per_answer:.0f}", explore)
    console.print(table)
    table = Table(title="flywheel: cycles")
    for column in ("cycle", "trained from", "train / held-out prompts", "new − incumbent N=1 at the gate", "k",
                   "outcome", "seconds"):
        table.add_column(column)
    for c in cycles:
        table.add_row(str(c.number), c.started_from, f"{c.train_prompts} / {c.heldout_prompts}", c.versus_incumbent,
                      str(c.best_of or "-"), c.outcome, f"{c.seconds:.0f}")
    console.print(table)


def plot(phases: list[Phase], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = range(len(phases))
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    rewards = [p.served_reward for p in phases]
    errors = [[p.served_reward - p.served_interval[0] for p in phases],
              [p.served_interval[1] - p.served_reward for p in phases]]
    axes[0].errorbar(x, rewards, yerr=errors, marker="o", capsize=4)
    axes[0].set_title("served reward (95 % interval)")
    axes[1].bar(x, [p.tokens_per_answer for p in phases])
    axes[1].set_title("tokens per answer")
    axes[2].bar(x, [p.k for p in phases])
    axes[2].set_title("k served")
    labels = [f"{p.label}\n{p.serving[-6:]} at k={p.k}" for p in phases]  # the phase, then what served it
    for ax in axes:
        ax.set_xticks(list(x), labels, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="a new directory: log, checkpoints, results")
    parser.add_argument("--from", dest="source", type=Path, help="a finished `tao demo --out` directory: its log is "
                        "cycle 1 (its checkpoints stay where they are)")
    parser.add_argument("--cycles", type=int, default=2, help="cycles in all, the first included (default: 2)")
    parser.add_argument("--prompts", type=int, default=80, help="fresh prompts per traffic phase (default: 80)")
    parser.add_argument("--explore-fraction", type=float, default=0.25, help="rollout.explore_fraction (default "
                        "0.25: at the product's 0.1, one phase of 80 prompts logs about 8 best-of-8 requests)")
    parser.add_argument("--start-from", choices=["incumbent", "base"], default="incumbent",
                        help="distill.start_from for cycles after the first (default: incumbent)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if (args.out / "tao.db").exists():
        raise SystemExit(f"{args.out / 'tao.db'} exists: pass a new --out directory")
    args.out.mkdir(parents=True, exist_ok=True)
    opts = DemoConfig(out=args.out, seed=args.seed)
    base = demo_settings(opts)
    settings = base.model_copy(update={
        "rollout": with_updates(base.rollout, explore_fraction=args.explore_fraction),
        "distill": with_updates(base.distill, start_from=args.start_from)})
    console = Console(width=160)  # the tables' checkpoint ids stay whole
    started = time.time()
    before, first = first_cycle(settings, opts, args.source, console)
    phases, cycles = [before], [first]
    for number in range(2, args.cycles + 1):
        phases.append(traffic(settings, opts, args.prompts, args.seed + 100 * number, f"after cycle {number - 1}"))
        cycles.append(later_cycle(number, settings, opts, console))
    phases.append(traffic(settings, opts, args.prompts, args.seed + 100 * (args.cycles + 1),
                          f"after cycle {args.cycles}"))
    print_tables(phases, cycles, console)
    results = {"args": {k: str(v) for k, v in vars(args).items()}, "seconds": round(time.time() - started),
               "phases": [asdict(p) for p in phases], "cycles": [asdict(c) for c in cycles]}
    (args.out / "flywheel.json").write_text(json.dumps(results, indent=2, default=str))
    plot(phases, args.out / "flywheel.png")
    console.print(f"{args.out / 'flywheel.json'}, {args.out / 'flywheel.png'}; {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
