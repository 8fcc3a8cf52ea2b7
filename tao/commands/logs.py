"""`tao logs export|prune`: the request log as a dataset, and its retention on demand."""

from __future__ import annotations

import argparse
import datetime as dt
import time
import typing
from pathlib import Path

from gateway.config import DistillConfig, DistillStage
from tao.commands.common import config_flag, parse_duration, parse_since, settings_from
from tao.flags import add_field_flags


def add_parser(sub: argparse._SubParsersAction) -> None:
    logs = sub.add_parser("logs", help="work with the request log")
    logs_sub = logs.add_subparsers(dest="logs_command", required=True)
    export_parser = logs_sub.add_parser(
        "export", help="write the logs as a JSONL dataset",
        description="Export logged prompts as JSONL in TRL's conversational formats: sft (prompt, completion), "
        "dpo (prompt, chosen, rejected), grpo (prompt), or raw (every scored candidate).")
    config_flag(export_parser)
    export_parser.add_argument("--format", choices=["raw", *typing.get_args(DistillStage)], default="raw",
                               help="(default: %(default)s)")
    export_parser.add_argument("--split", choices=["train", "heldout", "all"], default="all",
                               help="prompts held out from training by distill.holdout_fraction, the rest, or all "
                               "(default: %(default)s)")
    add_field_flags(export_parser, DistillConfig, "distill", only=("model",), overrides=True)
    export_parser.add_argument("--since", type=parse_since,
                               help="all, 24h, 2026-11-30, or unix seconds (default: all)")
    export_parser.add_argument("--out", type=Path, required=True, help="output .jsonl path")
    export_parser.set_defaults(run=export)

    prune_parser = logs_sub.add_parser(
        "prune", help="delete old requests and give the space back",
        description="Delete requests older than --older-than (default: store.retention_days) with their candidates "
        "and feedback, checkpoint the WAL with TRUNCATE, and with --vacuum rewrite the file to its new size. "
        "Checkpoints and rollout history are kept. Safe while the gateway runs (--vacuum waits for its lock).")
    config_flag(prune_parser)
    prune_parser.add_argument("--older-than", type=parse_duration,
                              help="30d, 12h, ... (default: store.retention_days)")
    prune_parser.add_argument("--vacuum", action="store_true",
                              help="also VACUUM (needs free disk as large as the file)")
    prune_parser.set_defaults(run=prune)


def export(args: argparse.Namespace) -> int:
    from distill.dataset import build_rows, load_prompts, split, write_jsonl
    from gateway.store import connection

    settings = settings_from(args)
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


def prune(args: argparse.Namespace) -> int:
    from gateway.store import connection, prune, vacuum

    settings = settings_from(args)
    older_than = args.older_than
    if older_than is None:
        if settings.store.retention_days is None:
            raise SystemExit("tao logs prune: give --older-than (e.g. 30d) or set store.retention_days")
        older_than = settings.store.retention_days * 86400
    if not settings.store.path.is_file():
        raise SystemExit(f"tao: no log at {settings.store.path} (store.path)")
    before = time.time() - older_than
    size = disk_size(settings.store.path)
    with connection(settings.store.path) as db:
        pruned = prune(db, before)
        if args.vacuum:
            vacuum(db)
    print(f"deleted {pruned.requests} requests, {pruned.candidates} candidates and {pruned.feedback} feedback rows "
          f"older than {dt.datetime.fromtimestamp(before):%Y-%m-%d %H:%M}; {settings.store.path}: "
          f"{size / 1e6:.1f} MB -> {disk_size(settings.store.path) / 1e6:.1f} MB (with its WAL)")
    return 0


def disk_size(path: Path) -> int:
    return sum(p.stat().st_size for p in (path, path.with_name(path.name + "-wal")) if p.exists())
