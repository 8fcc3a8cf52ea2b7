"""`tao demo`: the whole TAO loop on the embedded model, offline, on this CPU.

1. serve the embedded SmolLM2 with the default scorer; send generated instruction-following
   prompts at best-of-N (seeded, concurrent, with a progress bar);
2. distill the log (default method: DPO) with its eval gate;
3. if the gate published it, roll the checkpoint out at the k distill chose (canary 10 %, every
   incumbent request shadowed) and send the held-out prompts, then fresh prompts of the same
   generator, round after round until the policy promotes or rolls back;
4. report: a table, report.json, report.html and PNG plots, all computed from the SQLite log.
"""

from __future__ import annotations

import math
import time

import httpx
from rich.console import Console
from rich.table import Table

from distill.dataset import load_prompts, split
from distill.job import PUBLISHED, TOO_LITTLE_DATA, run_distill
from gateway.app import create_app
from gateway.config import (
    DistillConfig,
    ModelConfig,
    RolloutConfig,
    RoundSettings,
    Settings,
    StoreConfig,
    default_models,
    with_updates,
)
from gateway.stats import z_for
from gateway.store import Arm, RolloutState, connection
from tao.demo import report
from tao.demo.config import DemoConfig
from tao.demo.prompts import generate_prompts
from tao.demo.workload import send_workload
from tao.server_thread import serve_in_thread


def models_at(best_of: int, max_tokens: int) -> list[ModelConfig]:
    """The default models serving best-of-`best_of` by default (allowed up to it), `max_tokens` an answer."""
    return [with_updates(m, best_of=best_of, max_best_of=max(m.max_best_of, best_of), max_tokens=max_tokens)
            for m in default_models()]


def demo_settings(opts: DemoConfig) -> Settings:
    """The embedded model at the demo's N, a private log and checkpoints under `out`, data minimums a
    small run meets, and the demo's rollout plan (distill sizes the candidate's k for it)."""
    return Settings(
        models=models_at(opts.best_of, opts.max_tokens),
        store=StoreConfig(path=opts.out / "tao.db"),
        distill=DistillConfig(method=opts.method, rounds=opts.distill_rounds, max_steps=opts.max_steps,
                              round=RoundSettings(best_of=opts.round_best_of),
                              checkpoints_dir=opts.out / "checkpoints",
                              seed=opts.seed, max_new_tokens=opts.max_tokens, gate_margin=opts.gate_margin,
                              verbose=opts.verbose,
                              min_train_prompts=2, min_heldout_prompts=1),
        rollout=demo_rollout(opts),
    )


def demo_rollout(opts: DemoConfig) -> RolloutConfig:
    """A canary at 10 %, climbing 10 → 25 → 50 % while harm is not shown, every incumbent request
    shadowed; a look every `prompts_per_look` prompts, `rounds` looks at most. The policy's rule,
    alpha and margin are the product's; only the amount of evidence is sized to the demo's time."""
    return RolloutConfig(margin=opts.rollout_margin, steps=[10.0, 25.0, 50.0, 100.0],
                         pairs_per_look=opts.prompts_per_look, max_looks=opts.rounds,
                         min_requests_rollback=opts.prompts_per_look, shadow_fraction=1.0,
                         check_interval_s=3600.0)  # the demo looks after each round itself


_ENDINGS = {RolloutState.PROMOTED: "the rollout policy promoted the checkpoint",
            RolloutState.ROLLED_BACK: "the rollout policy rolled the checkpoint back",
            RolloutState.FAILED: "the rollout failed"}


def _roll_out(settings: Settings, opts: DemoConfig, checkpoint_id: str, console: Console) -> str:
    """Canary the checkpoint at the k distill chose, every incumbent request shadowed, and send prompts
    round after round: the held-out prompts first (the report's figures), then fresh prompts of the
    same generator, none of them in the log (the test's unit is a prompt: repeats would add pairs but
    no units), as many as the next look needs at the canary's share. After each round, once its
    shadow pairs are logged, let the policy look. Stop as soon as it has decided: its last look
    (`opts.rounds`) always decides. Returns how the rollout ended."""
    model = settings.distill.model
    plan = settings.rollout
    with connection(settings.store.path) as db:
        logged = load_prompts(db, model)
    heldout = [p.messages[-1]["content"] for p in split(logged, settings.distill.holdout_fraction)[1]]
    known = {p.messages[-1]["content"] for p in logged}
    most_rounds = 2 * plan.max_looks
    with serve_in_thread(create_app(settings), server_config=settings.server, startup_timeout_s=600) as url:
        admin = f"{url}/admin/rollout"
        httpx.post(f"{admin}/{model}/start", timeout=600,
                   json={"checkpoint": checkpoint_id, "canary": plan.steps[0]}).raise_for_status()
        state = httpx.get(admin, timeout=60).json()["rollouts"][0]
        console.rule(f"3/4 rollout: the candidate at best-of-{state['candidate_best_of']} against best-of-"
                     f"{state['incumbent_best_of']}, canary {plan.steps[0]:g} %, a look every "
                     f"{plan.pairs_per_look} prompts, {plan.max_looks} looks at most")
        for round_ in range(most_rounds):
            pairs = state["shadow_pairs"]
            wanted = max(pairs["prompts_for_next_look"] - pairs["units"], 1)
            # the canary's share brings no pairs, and users hash onto arms unevenly: a quarter to spare
            count = math.ceil(1.25 * wanted / (1 - state["share"] / 100)) + 2
            prompts = heldout if round_ == 0 else fresh_prompts(count, opts.seed + 1 + round_, known)
            known.update(prompts)
            results = send_workload(url + "/v1", model, prompts, best_of=None, concurrency=opts.concurrency,
                                    desc=f"{'held-out' if round_ == 0 else 'fresh'} round {round_ + 1} (look "
                                    f"{state['looks'] + 1}/{plan.max_looks})", user=f"rollout-r{round_}")
            expected = state["shadow_pairs"]["pairs"] + sum(r.arm == Arm.BASE for r in results)
            wait_for_pairs(admin, expected, console)
            decision = httpx.post(f"{admin}/{model}/check", timeout=60).json()
            console.print(f"policy after round {round_ + 1}: {decision['action']}: {decision['reason']}")
            state = httpx.get(admin, timeout=60).json()["rollouts"][0]
            if state["state"] != RolloutState.CANARY:
                return (f"{_ENDINGS.get(state['state'], state['state'])} (best-of-{state['candidate_best_of']}) "
                        f"after round {round_ + 1}")
    return (f"the rollout policy had not decided after {most_rounds} rounds ({state['looks']} looks: too few shadow "
            f"pairs were logged): the checkpoint is still a canary at {state['share']:g}%")


def fresh_prompts(count: int, seed: int, known: set[str]) -> list[str]:
    """`count` prompts of the demo's generator that are not in `known`."""
    candidates = generate_prompts(count + len(known), seed=seed)
    return [p for p in candidates if p not in known][:count]


def wait_for_pairs(admin_url: str, expected: int, console: Console, timeout_s: float = 120.0) -> None:
    """Shadow replies are generated and scored in the background after the incumbent's reply: wait
    until the round's pairs are in the log (a failed shadow never pairs: give up after `timeout_s`)."""
    deadline = time.monotonic() + timeout_s
    while (pairs := httpx.get(admin_url, timeout=60).json()["rollouts"][0]["shadow_pairs"]["pairs"]) < expected:
        if time.monotonic() > deadline:
            console.print(f"only {pairs} of {expected} shadow pairs logged after {timeout_s:g} s; the policy "
                          "looks at what there is", style="yellow")
            return
        time.sleep(0.5)


def run_demo(opts: DemoConfig) -> int:
    """Run the four steps and write the report; 0 when done (a rejected checkpoint is a result too),
    2 (distill's own code) when the traffic gave too little data to train on."""
    console = Console()
    opts.out.mkdir(parents=True, exist_ok=True)
    if (opts.out / "tao.db").exists():
        raise SystemExit(f"{opts.out / 'tao.db'} exists: pass a fresh --out directory")
    settings = demo_settings(opts)
    model = settings.distill.model
    started = time.time()
    phases: dict[str, float] = {}

    console.rule(f"1/4 best-of-{opts.best_of} traffic: {opts.prompts} prompts (seed {opts.seed})")
    with serve_in_thread(create_app(settings), server_config=settings.server, startup_timeout_s=600) as url:
        results = send_workload(url + "/v1", model, generate_prompts(opts.prompts, seed=opts.seed),
                                best_of=opts.best_of, concurrency=opts.concurrency, desc="best-of-N traffic",
                                user="traffic")
    failed = sum(r.error is not None for r in results)
    console.print(f"{len(results) - failed} replies logged, {failed} failed")
    phases["traffic"] = time.time() - started

    console.rule(f"2/4 distill ({opts.method}, {settings.distill.epochs:g} epoch(s)"
                 f"{f', at most {opts.max_steps} steps' if opts.max_steps else ''})")
    outcome = run_distill(settings, since=0.0)
    console.print(outcome.message, style="green" if outcome.exit_code == PUBLISHED else "yellow")
    phases["distill"] = time.time() - started - sum(phases.values())

    if outcome.exit_code == PUBLISHED:
        result = f"{outcome.message}; {_roll_out(settings, opts, outcome.checkpoint_id, console)}"
        phases["rollout"] = time.time() - started - sum(phases.values())
    else:
        result = f"{outcome.message} The checkpoint is not rolled out."

    console.rule("4/4 report (computed from the log)")
    data = report.compute(settings.store.path, model, outcome.checkpoint_id, settings.distill.holdout_fraction,
                          z=z_for(settings.rollout.alpha))
    phases["report"] = time.time() - started - sum(phases.values())
    meta = {**opts.model_dump(mode="json"), "database": settings.store.path, "outcome": result,
            "seconds": round(time.time() - started), "phase_seconds": {k: round(v) for k, v in phases.items()}}
    html_path = report.write(data, meta, opts.out)
    table = Table(title=f"TAO demo: {data['heldout_prompts']} held-out prompts, seed {opts.seed}")
    for column in ("", "mean reward", "tokens / served answer"):
        table.add_column(column, justify="right" if column else "left")
    for row in report.table_rows(data, opts.best_of):
        table.add_row(*row)
    console.print(table)
    console.print(result)
    console.print(f"report: {html_path} (and report.json, rewards.png, tokens.png, rollout.png); "
                  f"log: {settings.store.path}; {time.time() - started:.0f} s ("
                  + ", ".join(f"{k} {v:.0f} s" for k, v in phases.items()) + ")")
    if outcome.exit_code == TOO_LITTLE_DATA:
        console.print(f"The loop did not run: too little data to train on. Run the demo again with more --prompts "
                      f"(now {opts.prompts}) or a larger --max-tokens (now {opts.max_tokens}), so that more answers "
                      "end on their own and differ in score.", style="red")
    return outcome.exit_code if outcome.exit_code == TOO_LITTLE_DATA else 0
