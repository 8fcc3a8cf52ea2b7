"""`tao`: the command line. Each subcommand mirrors a Python entry point."""

from __future__ import annotations

import argparse
import logging
import sys

from gateway import __version__


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    for noisy in ("LiteLLM", "litellm", "httpx", "httpx2", "httpcore", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from gateway.app import create_app
    from gateway.config import load_settings

    settings = load_settings(args.config)
    app = create_app(settings)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level.lower(),
                access_log=args.access_log, timeout_graceful_shutdown=30)
    return 0


def parse_duration(text: str) -> float:
    """'90s', '30m', '6h', '7d' → seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        return float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text)
    except (ValueError, IndexError):
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use e.g. 90s, 30m, 6h, 7d)") from None


def parse_since(text: str) -> float:
    """'all', a duration back from now ('24h'), unix seconds, or an ISO date/time → unix seconds."""
    import datetime as dt
    import time

    if text == "all":
        return 0.0
    if text[-1:] in ("s", "m", "h", "d") and text[:-1].replace(".", "", 1).isdigit():
        return time.time() - parse_duration(text)
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a time: {text!r} (use all, 24h, 2026-11-30, or unix seconds)") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)).timestamp()


def _distill_settings(args: argparse.Namespace):
    from gateway.config import load_settings

    settings = load_settings(args.config)
    updates = {k: v for k, v in {"method": args.method, "max_steps": args.max_steps, "model": args.model,
                                 "checkpoints_dir": args.checkpoints_dir}.items() if v is not None}
    return settings.model_copy(update={"distill": settings.distill.model_copy(update=updates)})


def _print_outcome(outcome) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    report = outcome.report
    if report is not None:
        table = Table(title=f"distill: {report.prompts} held-out prompts × {report.samples_per_prompt} samples")
        table.add_column("")
        table.add_column("mean reward", justify="right")
        table.add_column("tokens / served answer", justify="right")
        table.add_row("base N=1 (logged)", f"{report.base_n1_logged:.4f}", "")
        table.add_row("base best-of-N (logged)", f"{report.base_best_of_n_logged:.4f}",
                      f"{report.base_tokens_per_answer_logged:.1f}")
        table.add_row("base N=1 (eval)", f"{report.base_n1:.4f}", "")
        table.add_row("new checkpoint N=1 (eval)", f"{report.new_n1:.4f}", f"{report.new_tokens_per_answer:.1f}")
        recovered = report.gain_recovered
        table.add_row("share of best-of-N gain recovered", "n/a" if recovered is None else f"{recovered:.0%}", "")
        console.print(table)
    if outcome.counts:
        console.print("data: " + ", ".join(f"{k} {v}" for k, v in outcome.counts.items()))
    console.print(outcome.message, style="green" if outcome.exit_code == 0 else "red")


def _distill(args: argparse.Namespace) -> int:
    import time

    from distill.job import run_distill

    while True:
        settings = _distill_settings(args)
        outcome = run_distill(settings, since=args.since)
        _print_outcome(outcome)
        if not args.watch:
            return outcome.exit_code
        logging.getLogger("tao").info("next distill run in %s", args.every)
        time.sleep(parse_duration(args.every))


def _export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from distill.dataset import build_rows, load_prompts, split, write_jsonl
    from gateway.config import load_settings
    from gateway.store import Store

    settings = load_settings(args.config)
    model = args.model or settings.distill.model
    prompts = load_prompts(Store(settings.store.path).connect(), model, since=args.since)
    train, heldout = split(prompts, settings.distill.holdout_fraction)
    chosen = {"train": train, "heldout": heldout, "all": prompts}[args.split]
    count = write_jsonl(build_rows(args.format, chosen, settings.distill), Path(args.out))
    print(f"wrote {count} {args.format} rows ({args.split} split of {len(prompts)} prompts of {model}) to {args.out}")
    return 0


def _rollout(args: argparse.Namespace) -> int:
    import os

    import httpx
    from rich.console import Console
    from rich.table import Table

    url = (args.url or os.environ.get("TAO_URL") or "http://127.0.0.1:8000").rstrip("/")
    key = args.admin_key or os.environ.get("TAO_AUTH__ADMIN_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    console = Console()
    try:
        if args.action == "status":
            response = httpx.get(f"{url}/admin/rollout", headers=headers, timeout=60)
        elif args.action == "start":
            body = {"checkpoint": args.checkpoint, "canary": args.canary, "best_of": args.best_of}
            response = httpx.post(f"{url}/admin/rollout/{args.model}/start", json=body, headers=headers, timeout=600)
        else:
            response = httpx.post(f"{url}/admin/rollout/{args.model}/{args.action}", headers=headers, timeout=60)
    except httpx.HTTPError as exc:
        console.print(f"cannot reach the gateway at {url}: {exc}", style="red")
        return 1
    data = response.json()
    if response.status_code != 200:
        console.print(f"{response.status_code}: {data.get('error', {}).get('message', data)}", style="red")
        return 1
    if args.action == "check":
        console.print(f"{data['action']}: {data['reason']}")
        return 0
    rows = data["rollouts"] if args.action == "status" else [data]
    table = Table(title="rollouts")
    for column in ("model", "checkpoint", "state", "candidate share", "incumbent reward (n)",
                   "candidate reward (n)", "tokens/request before → after"):
        table.add_column(column)
    for row in rows:
        if not row.get("state"):
            table.add_row(row["model"], "-", "no rollout", "0%", "", "", "")
            continue
        arms, tokens = row["arms_this_step"], row["tokens_per_request"]
        after = "-" if tokens["after"] is None else f"{tokens['after']:.1f}"
        table.add_row(row["model"], row["checkpoint_id"], row["state"], f"{row['share']:g}%",
                      f"{arms['incumbent']['mean']:.3f} ({arms['incumbent']['scored']})",
                      f"{arms['candidate']['mean']:.3f} ({arms['candidate']['scored']})",
                      f"{tokens['before']:.1f} → {after}")
    console.print(table)
    return 0


def _rollout_command(args: argparse.Namespace) -> int:
    if args.action == "start":
        if not args.target:
            raise SystemExit("tao rollout start <checkpoint> [--model M]")
        args.checkpoint, args.model = args.target, args.model or "smollm2"
    elif args.action != "status":
        if not args.target:
            raise SystemExit(f"tao rollout {args.action} <model>")
        args.model = args.target
    return _rollout(args)


def _demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tao.demo.run import DemoOptions, run_demo

    return run_demo(DemoOptions(prompts=args.prompts, best_of=args.best_of, method=args.method, seed=args.seed,
                                out=Path(args.out), max_steps=args.max_steps, max_tokens=args.max_tokens,
                                rounds=args.rounds, gate_margin=args.gate_margin))


def _reward_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from distill.job import base_weights
    from distill.reward_model import RewardTrainOptions, TooFewPairs, train_reward_model
    from gateway.config import load_settings

    settings = load_settings(args.config)
    base = Path(args.base_model) if args.base_model else base_weights(settings)[1]
    options = RewardTrainOptions(base_model=base, out_dir=Path(args.out), from_logs=args.from_logs,
                                 model=settings.distill.model, min_gap=args.min_gap, max_steps=args.max_steps,
                                 min_pairs=args.min_pairs)
    try:
        row = train_reward_model(settings.store.path, options)
    except TooFewPairs as exc:
        print(exc)
        return 2
    metrics = row["metrics"]
    print(f"held-out pairwise accuracy {metrics['heldout_pairwise_accuracy']:.1%} on {metrics['heldout_pairs']} pairs "
          f"({metrics['train_pairs']} trained on); registered {row['id']}")
    print(f"use it with:  reward: {{kind: hf, path: {row['path']}}}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tao",
        description="TAO Gateway: an OpenAI-compatible best-of-N proxy. It samples N candidates, returns "
        "the one a reward model scores best, and logs every candidate to SQLite for distillation.",
    )
    parser.add_argument("--version", action="version", version=f"tao-gateway {__version__}")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser(
        "serve", help="run the gateway",
        description="Serve /v1/chat/completions, /v1/completions, /v1/models, /healthz and /metrics. "
        "With no --config it serves the embedded SmolLM2-135M-Instruct as model 'smollm2' on this CPU, "
        "best_of 4 by default, with the built-in instruction-following scorer, logging to ./tao.db.",
    )
    serve.add_argument("--config", help="tao.yaml (default: $TAO_CONFIG, else built-in defaults)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--access-log", action="store_true", help="log every HTTP request line")
    serve.set_defaults(run=_serve)

    distill = sub.add_parser(
        "distill", help="fine-tune the model on its best-of-N logs and publish a checkpoint",
        description="Read scored best-of-N logs from the store (since the last published checkpoint unless "
        "--since), build a dataset, train a LoRA adapter with TRL (dpo: logged best-vs-worst pairs, the CPU "
        "default; grpo: online RL with the gateway's own scorer; sft: on the winners), evaluate it at N=1 "
        "against the base model on held-out prompts, and publish it only if it wins. Exit codes: 0 "
        "published, 2 too little data, 3 rejected by the eval gate, 4 another run holds the lock.",
    )
    distill.add_argument("--config", help="tao.yaml (its distill: section; default: built-in defaults)")
    distill.add_argument("--method", choices=["dpo", "grpo", "sft"], help="default: distill.method (dpo)")
    distill.add_argument("--model", help="public model whose logs to distill (default: distill.model)")
    distill.add_argument("--since", type=parse_since, help="all, 24h, 2026-11-30, or unix seconds")
    distill.add_argument("--max-steps", type=int, help="training steps (default: distill.max_steps)")
    distill.add_argument("--checkpoints-dir", help="where checkpoints are written (default: ./checkpoints)")
    distill.add_argument("--watch", action="store_true", help="run again every --every")
    distill.add_argument("--every", default="6h", help="period for --watch (90s, 30m, 6h, 1d)")
    distill.set_defaults(run=_distill)

    rollout = sub.add_parser(
        "rollout", help="move traffic to a distilled checkpoint gradually",
        description="Talk to a running gateway's /admin/rollout routes (--url, default $TAO_URL or "
        "http://127.0.0.1:8000; --admin-key, default $TAO_AUTH__ADMIN_KEY). `start` loads the checkpoint's "
        "adapter and gives it a canary share; the gateway's policy then steps it up or rolls it back on "
        "measured reward; `promote` and `rollback` override it; `check` runs the policy once now.")
    rollout.add_argument("action", choices=["status", "start", "promote", "rollback", "check"])
    rollout.add_argument("target", nargs="?", help="start: the checkpoint id; promote/rollback/check: the model")
    rollout.add_argument("--model", help="start: the public model (default: distill.model's default, smollm2)")
    rollout.add_argument("--canary", type=float, help="start: initial share in percent (default: first step)")
    rollout.add_argument("--best-of", type=int, help="start: N for the candidate arm (default 1)")
    rollout.add_argument("--url")
    rollout.add_argument("--admin-key")
    rollout.set_defaults(run=_rollout_command)

    demo = sub.add_parser(
        "demo", help="run the whole TAO loop on the embedded model and report",
        description="Serve the embedded SmolLM2, send generated instruction-following prompts at best-of-N, "
        "distill the log, roll the checkpoint out at N=1 on the held-out prompts and let the policy decide, "
        "then write a report (table, report.html, report.json, PNG plots) computed from the SQLite log. "
        "Offline, on this CPU: about 13 minutes with the defaults on 2 cores.")
    demo.add_argument("--prompts", type=int, default=80, help="prompts in the best-of-N traffic (default 80)")
    demo.add_argument("--best-of", type=int, default=8, help="N of the traffic (default 8)")
    demo.add_argument("--method", choices=["dpo", "grpo", "sft"], default="dpo")
    demo.add_argument("--seed", type=int, default=0, help="prompt generator and training seed")
    demo.add_argument("--out", default="tao-demo", help="directory for the log, checkpoints and report")
    demo.add_argument("--max-steps", type=int, default=40, help="training steps")
    demo.add_argument("--max-tokens", type=int, default=48, help="tokens per generated answer")
    demo.add_argument("--rounds", type=int, default=3, help="times the held-out prompts are sent in the rollout")
    demo.add_argument("--gate-margin", type=float, default=0.0, help="publish only if N=1 reward improves by more")
    demo.set_defaults(run=_demo)

    reward = sub.add_parser("reward", help="reward models")
    reward_sub = reward.add_subparsers(dest="reward_command", required=True)
    reward_train = reward_sub.add_parser(
        "train", help="train a reward model from feedback",
        description="Build preference pairs from POST /v1/feedback verdicts (and with --from-logs, from confident "
        "score gaps in the logs), train a Bradley-Terry reward model with TRL's RewardTrainer (LoRA on a small "
        "base, CPU-capable), report held-out pairwise accuracy, and register it; then use it with "
        "`reward: {kind: hf, path: ...}`. Exit code 2 when there are too few pairs.")
    reward_train.add_argument("--config")
    reward_train.add_argument("--base-model", help="weights directory (default: the distill model's weights)")
    reward_train.add_argument("--from-logs", action="store_true", help="add best-vs-worst pairs from the logs")
    reward_train.add_argument("--min-gap", type=float, default=0.3, help="score gap for --from-logs pairs")
    reward_train.add_argument("--min-pairs", type=int, default=16)
    reward_train.add_argument("--max-steps", type=int, default=60)
    reward_train.add_argument("--out", default="reward_models", help="where trained reward models are written")
    reward_train.set_defaults(run=_reward_train)

    logs = sub.add_parser("logs", help="work with the request log")
    logs_sub = logs.add_subparsers(dest="logs_command", required=True)
    export = logs_sub.add_parser(
        "export", help="write the logs as a JSONL dataset",
        description="Export logged prompts as JSONL in TRL's conversational formats: sft (prompt, completion), "
        "dpo (prompt, chosen, rejected), grpo (prompt), or raw (every scored candidate).")
    export.add_argument("--config")
    export.add_argument("--format", choices=["raw", "sft", "dpo", "grpo"], default="raw")
    export.add_argument("--split", choices=["train", "heldout", "all"], default="all")
    export.add_argument("--model", help="public model (default: distill.model)")
    export.add_argument("--since", type=parse_since)
    export.add_argument("--out", required=True, help="output .jsonl path")
    export.set_defaults(run=_export)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    _setup_logging(args.log_level)
    sys.exit(args.run(args))
