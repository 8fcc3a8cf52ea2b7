"""`tao demo`: the whole TAO loop on the embedded model, offline, on this CPU.

1. serve the embedded SmolLM2 with the default scorer; send generated instruction-following
   prompts at best-of-N (seeded, concurrent, with a progress bar);
2. distill the log (default method: DPO) with its eval gate;
3. roll the checkpoint out at N=1 (canary 50 %, every incumbent request shadowed) and send the
   held-out prompts a few rounds, letting the policy promote or roll back;
4. report: a table, report.json, report.html and PNG plots, all computed from the SQLite log.
"""

from __future__ import annotations

import time

import httpx
from rich.console import Console
from rich.table import Table

from distill.dataset import load_prompts, split
from distill.job import PUBLISHED, run_distill
from gateway.app import create_app
from gateway.config import DistillConfig, RolloutConfig, Settings, StoreConfig, default_models, with_updates
from gateway.store import connection
from tao.demo import report
from tao.demo.config import DemoConfig
from tao.demo.prompts import generate_prompts
from tao.demo.workload import send_workload
from tao.server_thread import serve_in_thread


def demo_settings(opts: DemoConfig, heldout_hint: int) -> Settings:
    """The embedded model at the demo's N, a private log and checkpoints under `out`, data minimums a
    small run meets, and a rollout whose steps need about the evidence one held-out round gives."""
    models = [with_updates(m, best_of=opts.best_of, max_best_of=max(m.max_best_of, opts.best_of),
                           max_tokens=opts.max_tokens) for m in default_models()]
    return Settings(
        models=models,
        store=StoreConfig(path=opts.out / "tao.db"),
        distill=DistillConfig(method=opts.method, max_steps=opts.max_steps, checkpoints_dir=opts.out / "checkpoints",
                              seed=opts.seed, max_new_tokens=opts.max_tokens, gate_margin=opts.gate_margin,
                              min_train_prompts=2, min_heldout_prompts=1),
        rollout=RolloutConfig(steps=[50.0, 100.0], pairs_per_look=max(4, heldout_hint // 2), max_looks=opts.rounds,
                              min_requests_rollback=max(4, heldout_hint // 2), shadow_fraction=1.0,
                              check_interval_s=2.0),
    )


def run_demo(opts: DemoConfig) -> int:
    """Run the four steps and write the report; 0 when done (a rejected checkpoint is a result too)."""
    console = Console()
    opts.out.mkdir(parents=True, exist_ok=True)
    if (opts.out / "tao.db").exists():
        raise SystemExit(f"{opts.out / 'tao.db'} exists: pass a fresh --out directory")
    # Rollout evidence needed per step: about the candidate replies one round of held-out prompts gives.
    settings = demo_settings(opts, heldout_hint=round(opts.prompts * DistillConfig().holdout_fraction))
    model = settings.distill.model
    started = time.time()

    console.rule(f"1/4 best-of-{opts.best_of} traffic: {opts.prompts} prompts (seed {opts.seed})")
    with serve_in_thread(create_app(settings), startup_timeout_s=600) as url:
        results = send_workload(url + "/v1", model, generate_prompts(opts.prompts, seed=opts.seed),
                                best_of=opts.best_of, concurrency=opts.concurrency, desc="best-of-N traffic",
                                user="traffic")
    failed = sum(r.error is not None for r in results)
    console.print(f"{len(results) - failed} replies logged, {failed} failed")

    console.rule(f"2/4 distill ({opts.method}, {opts.max_steps} steps)")
    outcome = run_distill(settings, since=0.0)
    console.print(outcome.message, style="green" if outcome.exit_code == PUBLISHED else "yellow")

    if outcome.exit_code == PUBLISHED:
        console.rule("3/4 rollout at N=1: canary 50 %, the held-out prompts, policy decides")
        with connection(settings.store.path) as db:
            logged = load_prompts(db, model)
        heldout = [p.messages[-1]["content"] for p in split(logged, settings.distill.holdout_fraction)[1]]
        with serve_in_thread(create_app(settings), startup_timeout_s=600) as url:
            started_rollout = httpx.post(f"{url}/admin/rollout/{model}/start", timeout=600,
                                         json={"checkpoint": outcome.checkpoint_id, "canary": 50, "best_of": 1})
            started_rollout.raise_for_status()
            for round_ in range(opts.rounds):
                send_workload(url + "/v1", model, heldout, best_of=None, concurrency=opts.concurrency,
                              desc=f"held-out round {round_ + 1}/{opts.rounds}", user=f"heldout-r{round_}")
            time.sleep(1.0)  # the last N=1 replies are scored just after they are sent
            final = httpx.post(f"{url}/admin/rollout/{model}/check", timeout=60)
            if final.status_code == 200:
                console.print(f"policy: {final.json()['action']}: {final.json()['reason']}")
            state = httpx.get(f"{url}/admin/rollout", timeout=60).json()["rollouts"][0]
        result = f"{outcome.message}; rollout ended {state['state']} at {state['share']:g}%"
    else:
        result = outcome.message

    console.rule("4/4 report (computed from the log)")
    data = report.compute(settings.store.path, model, outcome.checkpoint_id, settings.distill.holdout_fraction)
    meta = {**opts.model_dump(mode="json"), "database": settings.store.path, "outcome": result,
            "seconds": round(time.time() - started)}
    html_path = report.write(data, meta, opts.out)
    table = Table(title=f"TAO demo: {data['heldout_prompts']} held-out prompts, seed {opts.seed}")
    for column in ("", "mean reward", "tokens / served answer"):
        table.add_column(column, justify="right" if column else "left")
    for row in report.table_rows(data, opts.best_of):
        table.add_row(*row)
    console.print(table)
    console.print(result)
    console.print(f"report: {html_path} (and report.json, rewards.png, tokens.png, rollout.png); "
                  f"log: {settings.store.path}; {time.time() - started:.0f} s")
    return 0
