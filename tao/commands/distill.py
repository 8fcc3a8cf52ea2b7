"""`tao distill`: fine-tune the model on its best-of-N logs and publish a checkpoint."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import time
from pathlib import Path

from gateway.config import DistillConfig
from tao.commands.common import config_flag, parse_duration, parse_since, settings_from
from tao.flags import add_field_flags

FLAGS = ("method", "model", "epochs", "max_steps", "checkpoints_dir", "verbose")  # keys a command line may override


def add_parser(sub: argparse._SubParsersAction) -> None:
    distill = sub.add_parser(
        "distill", help="fine-tune the model on its best-of-N logs and publish a checkpoint",
        description="Read scored best-of-N logs from the store (since the last published checkpoint unless "
        "--since), build a dataset, train a LoRA adapter with TRL, evaluate it at N=1 against the base model "
        "on held-out prompts, and publish it only if it wins. After a promotion it learns from the promoted "
        "checkpoint's own best-of-N traffic and is judged against that checkpoint (distill.start_from). Exit codes: "
        "0 published, 1 an error (a bad config), 2 too little data (or, from argparse, a bad flag), 3 rejected by "
        "the eval gate, 4 another run holds the lock, 5 the promoted checkpoint has lost its adapter files.",
    )
    config_flag(distill)
    add_field_flags(distill, DistillConfig, "distill", only=FLAGS, overrides=True)
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
    distill.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
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
            outcome = run_distill(settings_from(args), since=args.since)  # the config is re-read each run
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
