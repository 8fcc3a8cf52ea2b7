"""`tao`: the command line. Each subcommand mirrors a Python entry point.

Flags that set a config value are generated from the config models (`tao.flags`), so each default
is stated once, in its model, and `--help` shows it. Heavy modules (the server, the trainers) are
imported by the command that needs them, so `tao --help` stays quick.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import math
import sys
import time
import typing
from pathlib import Path

from pydantic import ValidationError

from gateway import __version__
from gateway.config import (
    DistillConfig,
    DistillStage,
    Settings,
    StoreConfig,
    default_models,
    load_settings,
    with_updates,
)
from tao.demo.config import DemoConfig
from tao.flags import add_field_flags, explain, field_values, show_default

DISTILL_FLAGS = ("method", "model", "epochs", "max_steps", "checkpoints_dir", "verbose")  # distill: keys a command line may override
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
REWARD_TRAIN_HELP = {  # RewardTrainOptions is a plain dataclass: its fields carry no descriptions
    "out_dir": "where trained reward models are written",
    "from_logs": "add best-vs-worst pairs from the logs",
    "min_gap": "score gap for --from-logs pairs",
    "min_pairs": "fewest training pairs to train on",
    "holdout_fraction": "share of pairs (by prompt hash) held out to measure accuracy",
    "max_steps": "training steps",
    "batch_size": "pairs per training step",
    "learning_rate": "LoRA learning rate",
    "lora_r": "LoRA rank",
    "max_length": "tokens of prompt + answer kept",
    "seed": "training seed",
}


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    for noisy in ("LiteLLM", "litellm", "httpx", "httpx2", "httpcore", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def parse_duration(text: str) -> float:
    """'90s', '30m', '6h', '7d' (or plain seconds) → seconds, for argparse: a bad one is a usage error."""
    try:
        seconds = float(text[:-1]) * DURATION_UNITS[text[-1]] if text[-1:] in DURATION_UNITS else float(text)
    except ValueError:
        seconds = float("nan")
    if not (seconds > 0 and math.isfinite(seconds)):  # a period must be a positive, finite time
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use e.g. 90s, 30m, 6h, 7d)")
    return seconds


def parse_since(text: str) -> float:
    """'all', a duration back from now ('24h'), unix seconds, or an ISO date/time (UTC unless it
    says) → unix seconds, for argparse: a bad one is a usage error."""
    if text == "all":
        return 0.0
    if text[-1:] in DURATION_UNITS and text[:-1].replace(".", "", 1).isdigit():
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


def _settings(args: argparse.Namespace) -> Settings:
    """The config (file, then env) with this command's `distill` flags applied, all validated: a bad
    value ends the command with the reason (exit 1), never a traceback or a half-applied value."""
    try:
        settings = load_settings(args.config)
        distill = with_updates(settings.distill, **field_values(args, "distill"))
    except ValidationError as exc:
        raise SystemExit(f"tao: invalid configuration: {explain(exc)}") from None
    except FileNotFoundError as exc:
        raise SystemExit(f"tao: {exc}") from None
    return settings.model_copy(update={"distill": distill})


def _serve(args: argparse.Namespace) -> int:
    from gateway.app import create_app
    from gateway.auth import ExposedWithoutKeys, check_exposure
    from gateway.server import serve

    settings = _settings(args)
    if args.allow_unauthenticated:
        settings.auth.allow_unauthenticated = True
    try:
        check_exposure(args.host, settings.auth)
    except ExposedWithoutKeys as exc:
        raise SystemExit(f"tao serve: {exc}") from None
    serve(create_app(settings), args.host, args.port, settings.server, log_level=args.log_level.lower(),
          access_log=args.access_log)
    return 0


def _distill(args: argparse.Namespace) -> int:
    """One run, or with --watch one per period until stopped. SIGTERM stops it cleanly (the lock is
    released, nothing half-published), also as PID 1 in a container, which ignores SIGTERM unless
    it installs a handler. Under --watch a failing run is logged and counted, and the loop goes on;
    after a run that found too little data or failed, the next comes after --retry-every, not a
    whole period."""
    import signal
    import traceback

    from distill.job import LOCKED, PUBLISHED, REJECTED, TOO_LITTLE_DATA, run_distill

    answers = (TOO_LITTLE_DATA, REJECTED, LOCKED)  # outcomes that are answers, not errors
    from tao.console import print_outcome

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    if args.heartbeat:
        _beat(args.heartbeat)
    log = logging.getLogger("tao")
    failures = 0
    while True:
        try:
            outcome = run_distill(_settings(args), since=args.since)  # the config is re-read each run
        except Exception:  # noqa: BLE001 - under --watch one failed run must not end the loop
            if not args.watch:
                raise
            failures += 1
            log.error("distill run failed (%d failed runs so far):\n%s", failures, traceback.format_exc())
            wait = min(args.every, args.retry_every)
        else:
            print_outcome(outcome)
            if not args.watch:
                return PUBLISHED if args.answers_exit_zero and outcome.exit_code in answers else outcome.exit_code
            wait = args.every if outcome.exit_code in (PUBLISHED, REJECTED) else min(args.every, args.retry_every)
        log.info("next distill run in %s", dt.timedelta(seconds=wait))
        time.sleep(wait)


def _beat(path: Path, every_s: float = 60.0) -> None:
    """Touch `path` every minute from a daemon thread while the process lives (a container health check)."""
    import threading

    def beat() -> None:
        while True:
            path.touch()
            time.sleep(every_s)

    threading.Thread(target=beat, name="heartbeat", daemon=True).start()


def _model_export(args: argparse.Namespace) -> int:
    import shutil

    from gateway.embedded import embedded_model_dir

    source = embedded_model_dir()  # converts the GGUF once (~15 s), then reuses the float weights
    if args.out.exists() and any(args.out.iterdir()):
        raise SystemExit(f"tao model export: {args.out} exists and is not empty")
    shutil.copytree(source, args.out, dirs_exist_ok=True)
    print(f"wrote the embedded SmolLM2-135M-Instruct (float safetensors, tokenizer, config) to {args.out}: "
          "serve it with vLLM and set it as distill.base_model")
    return 0


def _export(args: argparse.Namespace) -> int:
    from distill.dataset import build_rows, load_prompts, split, write_jsonl
    from gateway.store import connection

    settings = _settings(args)
    model = settings.distill.model
    if not settings.store.path.is_file():
        raise SystemExit(f"tao: no log at {settings.store.path} (store.path)")
    with connection(settings.store.path) as db:
        prompts = load_prompts(db, model, since=args.since)
    train, heldout = split(prompts, settings.distill.holdout_fraction)
    chosen = {"train": train, "heldout": heldout, "all": prompts}[args.split]
    count = write_jsonl(build_rows(args.format, chosen, settings.distill), args.out)
    print(f"wrote {count} {args.format} rows ({args.split} split of {len(prompts)} prompts of {model}) to {args.out}")
    return 0


def _prune(args: argparse.Namespace) -> int:
    from gateway.store import connection, prune, vacuum

    settings = _settings(args)
    older_than = args.older_than
    if older_than is None:
        if settings.store.retention_days is None:
            raise SystemExit("tao logs prune: give --older-than (e.g. 30d) or set store.retention_days")
        older_than = settings.store.retention_days * 86400
    if not settings.store.path.is_file():
        raise SystemExit(f"tao: no log at {settings.store.path} (store.path)")
    before = time.time() - older_than
    size = _disk_size(settings.store.path)
    with connection(settings.store.path) as db:
        pruned = prune(db, before)
        if args.vacuum:
            vacuum(db)
    print(f"deleted {pruned.requests} requests, {pruned.candidates} candidates and {pruned.feedback} feedback rows "
          f"older than {dt.datetime.fromtimestamp(before):%Y-%m-%d %H:%M}; {settings.store.path}: "
          f"{size / 1e6:.1f} MB -> {_disk_size(settings.store.path) / 1e6:.1f} MB (with its WAL)")
    return 0


def _disk_size(path: Path) -> int:
    return sum(p.stat().st_size for p in (path, path.with_name(path.name + "-wal")) if p.exists())


def _rollout(args: argparse.Namespace) -> int:
    import os

    import httpx
    from rich.console import Console

    from tao.console import print_rollouts

    if args.action != "status" and not args.target:
        raise SystemExit(f"tao rollout {args.action} <{'checkpoint' if args.action == 'start' else 'model'}>")
    model = args.model if args.action == "start" else args.target
    url = (args.url or os.environ.get("TAO_URL") or "http://127.0.0.1:8000").rstrip("/")
    key = args.admin_key or os.environ.get("TAO_AUTH__ADMIN_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    console = Console()
    try:
        if args.action == "status":
            response = httpx.get(f"{url}/admin/rollout", headers=headers, timeout=60)
        elif args.action == "start":
            body = {"checkpoint": args.target, "canary": args.canary, "best_of": args.best_of}
            response = httpx.post(f"{url}/admin/rollout/{model}/start", json=body, headers=headers, timeout=600)
        else:
            response = httpx.post(f"{url}/admin/rollout/{model}/{args.action}", headers=headers, timeout=60)
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
    print_rollouts(data["rollouts"] if args.action == "status" else [data], console)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from tao.demo.run import run_demo

    return run_demo(DemoConfig.model_validate(field_values(args, "demo")))


def _reward_train(args: argparse.Namespace) -> int:
    from distill.job import base_weights
    from distill.reward_model import RewardTrainOptions, TooFewPairs, train_reward_model

    settings = _settings(args)
    base = args.base_model or base_weights(settings)[1]
    options = RewardTrainOptions(base_model=base, model=settings.distill.model, **field_values(args, "reward"))
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


def _config_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="tao.yaml (default: $TAO_CONFIG, else built-in defaults)")


def build_parser() -> argparse.ArgumentParser:
    """The whole command line; flags that set config values are generated from the config models."""
    from distill.reward_model import RewardTrainOptions

    embedded = default_models()[0]
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
        f"With no --config it serves the embedded SmolLM2-135M-Instruct as model '{embedded.name}' on this "
        f"CPU, best_of {embedded.best_of} by default, with the built-in instruction-following scorer, "
        f"logging to {show_default(StoreConfig().path)}.",
    )
    _config_flag(serve)
    serve.add_argument("--host", default="127.0.0.1", help="(default: %(default)s)")
    serve.add_argument("--port", type=int, default=8000, help="(default: %(default)s)")
    serve.add_argument("--access-log", action="store_true", help="log every HTTP request line")
    serve.add_argument("--allow-unauthenticated", action="store_true",
                       help="listen beyond loopback with no API keys (auth.allow_unauthenticated); without it "
                       "`tao serve --host 0.0.0.0` refuses to start until auth.api_keys is set")
    serve.set_defaults(run=_serve)

    distill = sub.add_parser(
        "distill", help="fine-tune the model on its best-of-N logs and publish a checkpoint",
        description="Read scored best-of-N logs from the store (since the last published checkpoint unless "
        "--since), build a dataset, train a LoRA adapter with TRL, evaluate it at N=1 against the base model "
        "on held-out prompts, and publish it only if it wins. Exit codes: 0 published, 1 an error (a bad "
        "config), 2 too little data (or, from argparse, a bad flag), 3 rejected by the eval gate, 4 another "
        "run holds the lock.",
    )
    _config_flag(distill)
    add_field_flags(distill, DistillConfig, "distill", only=DISTILL_FLAGS, overrides=True)
    distill.add_argument("--since", type=parse_since, help="all, 24h, 2026-11-30, or unix seconds "
                         "(default: the end of the last published checkpoint's data)")
    distill.add_argument("--watch", action="store_true", help="run again every --every, until stopped")
    distill.add_argument("--every", type=parse_duration, default="6h",
                         help="period for --watch: 90s, 30m, 6h, 1d (default: %(default)s)")
    distill.add_argument("--answers-exit-zero", action="store_true",
                         help="exit 0 for the outcomes that are answers (too little data, rejected by the gate, "
                         "another run holds the lock) so a scheduler shows real failures only; every outcome is "
                         "still printed and counted (the log's distill_runs, tao_distill_runs on /metrics)")
    distill.add_argument("--heartbeat", type=Path, help="touch this file every minute while running (for a "
                         "container health check)")
    distill.add_argument("--retry-every", type=parse_duration, default="10m",
                         help="--watch: wait after a run that found too little data, was locked out or failed "
                         "(default: %(default)s)")
    distill.set_defaults(run=_distill)

    rollout = sub.add_parser(
        "rollout", help="move traffic to a distilled checkpoint gradually",
        description="Talk to a running gateway's /admin/rollout routes (--url, default $TAO_URL or "
        "http://127.0.0.1:8000; --admin-key, default $TAO_AUTH__ADMIN_KEY). `start` loads the checkpoint's "
        "adapter and gives it a canary share; the gateway's policy then steps it up or rolls it back on "
        "measured reward; `promote` and `rollback` override it; `check` runs the policy once now.")
    rollout.add_argument("action", choices=["status", "start", "promote", "rollback", "check"])
    rollout.add_argument("target", nargs="?", help="start: the checkpoint id; promote/rollback/check: the model")
    rollout.add_argument("--model", default=DistillConfig.model_fields["model"].default,
                         help="start: the public model (default: %(default)s)")
    rollout.add_argument("--canary", type=float,
                         help="start: initial share in percent (default: the first of the gateway's rollout.steps)")
    rollout.add_argument("--best-of", type=int,
                         help="start: N for the candidate arm (default: the gateway's rollout.candidate_best_of)")
    rollout.add_argument("--url")
    rollout.add_argument("--admin-key")
    rollout.set_defaults(run=_rollout)

    demo = sub.add_parser(
        "demo", help="run the whole TAO loop on the embedded model and report",
        description="Serve the embedded SmolLM2, send generated instruction-following prompts at best-of-N, "
        "distill the log, roll the checkpoint out at N=1 on the held-out prompts and let the policy decide, "
        "then write a report (table, report.html, report.json, PNG plots) computed from the SQLite log. "
        "Offline, on this CPU: about 12 minutes with the defaults on 2 cores.")
    add_field_flags(demo, DemoConfig, "demo")
    demo.set_defaults(run=_demo)

    reward = sub.add_parser("reward", help="reward models")
    reward_sub = reward.add_subparsers(dest="reward_command", required=True)
    reward_train = reward_sub.add_parser(
        "train", help="train a reward model from feedback",
        description="Build preference pairs from POST /v1/feedback verdicts (and with --from-logs, from confident "
        "score gaps in the logs), train a Bradley-Terry reward model with TRL's RewardTrainer (LoRA on a small "
        "base, CPU-capable), report held-out pairwise accuracy, and register it; then use it with "
        "`reward: {kind: hf, path: ...}`. Exit code 2 when there are too few pairs.")
    _config_flag(reward_train)
    reward_train.add_argument("--base-model", type=Path,
                              help="weights directory (default: the distill model's weights)")
    add_field_flags(reward_train, RewardTrainOptions, "reward", exclude=("base_model", "model"),
                    flags={"out_dir": "--out"}, helps=REWARD_TRAIN_HELP)
    reward_train.set_defaults(run=_reward_train)

    model = sub.add_parser("model", help="model weights")
    model_sub = model.add_subparsers(dest="model_command", required=True)
    model_export = model_sub.add_parser(
        "export", help="write the embedded model as a servable directory",
        description="Write the embedded SmolLM2-135M-Instruct as a transformers directory (float safetensors, "
        "tokenizer, config): what vLLM serves and distill.base_model trains in deploy/ "
        "(tao model export --out deploy/models/SmolLM2-135M-Instruct). For a real model, download it instead "
        "(huggingface-cli download <repo> --local-dir deploy/models/<name>).")
    model_export.add_argument("--out", type=Path, required=True, help="target directory (new or empty)")
    model_export.set_defaults(run=_model_export)

    logs = sub.add_parser("logs", help="work with the request log")
    logs_sub = logs.add_subparsers(dest="logs_command", required=True)
    export = logs_sub.add_parser(
        "export", help="write the logs as a JSONL dataset",
        description="Export logged prompts as JSONL in TRL's conversational formats: sft (prompt, completion), "
        "dpo (prompt, chosen, rejected), grpo (prompt), or raw (every scored candidate).")
    _config_flag(export)
    export.add_argument("--format", choices=["raw", *typing.get_args(DistillStage)], default="raw",
                        help="(default: %(default)s)")
    export.add_argument("--split", choices=["train", "heldout", "all"], default="all",
                        help="prompts held out from training by distill.holdout_fraction, the rest, or all "
                        "(default: %(default)s)")
    add_field_flags(export, DistillConfig, "distill", only=("model",), overrides=True)
    export.add_argument("--since", type=parse_since, help="all, 24h, 2026-11-30, or unix seconds (default: all)")
    export.add_argument("--out", type=Path, required=True, help="output .jsonl path")
    export.set_defaults(run=_export)

    prune = logs_sub.add_parser(
        "prune", help="delete old requests and give the space back",
        description="Delete requests older than --older-than (default: store.retention_days) with their candidates "
        "and feedback, checkpoint the WAL with TRUNCATE, and with --vacuum rewrite the file to its new size. "
        "Checkpoints and rollout history are kept. Safe while the gateway runs (--vacuum waits for its lock).")
    _config_flag(prune)
    prune.add_argument("--older-than", type=parse_duration, help="30d, 12h, ... (default: store.retention_days)")
    prune.add_argument("--vacuum", action="store_true", help="also VACUUM (needs free disk as large as the file)")
    prune.set_defaults(run=_prune)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    _setup_logging(args.log_level)
    sys.exit(args.run(args))
