"""`tao loop`: distill, gate, roll out and decide, cycle after cycle, unattended."""

from __future__ import annotations

import argparse

from gateway.config import DistillConfig
from tao.commands.common import config_flag, parse_duration, settings_from
from tao.flags import add_field_flags


def add_parser(sub: argparse._SubParsersAction) -> None:
    loop = sub.add_parser(
        "loop", help="distill → gate → rollout → decision, cycle after cycle (TAO's continuous improvement)",
        description="Keep a model learning from its own traffic, unattended. Each cycle: distill the log since the "
        "last checkpoint, and if the eval gate publishes, start the checkpoint's rollout on the running gateway "
        "(--url, its admin key) and wait for the gateway's policy to promote or roll it back. After a promotion "
        "the gateway serves rollout.explore_fraction of requests at best-of-N from the promoted checkpoint: the "
        "next cycle's data, and the next checkpoint is judged against the promoted one. Its state is the store's, "
        "so a restarted loop goes on where it stopped; one loop per store (a lease). Use the gateway's config "
        "file. Exit codes: 0 --cycles cycles ended, 1 an error, 4 another loop holds the lease, 5 the promoted "
        "checkpoint has lost its adapter files, 6 the gateway refused a call (e.g. a wrong admin key).")
    config_flag(loop)
    add_field_flags(loop, DistillConfig, "distill", only=("model", "method", "checkpoints_dir", "verbose"),
                    overrides=True)
    loop.add_argument("--url", help="the gateway (default: $TAO_URL, else http://127.0.0.1:8000)")
    loop.add_argument("--admin-key", help="default: $TAO_AUTH__ADMIN_KEY")
    loop.add_argument("--cycles", type=int, help="stop after this many cycles have ended (a promotion, a rollback, "
                      "or a checkpoint the gate rejected); default: run until stopped")
    loop.add_argument("--poll", type=parse_duration, default="10s",
                      help="how often to look whether the gateway has decided a canary (default: %(default)s)")
    loop.add_argument("--retry-every", type=parse_duration, default="10m",
                      help="wait after a step that found nothing to do: too little new data, a rejected "
                      "checkpoint, a distill run already going (default: %(default)s)")
    loop.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import os
    import signal

    from tao.loop import GatewayAdmin, Loop

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    url = args.url or os.environ.get("TAO_URL") or "http://127.0.0.1:8000"
    admin = GatewayAdmin(url, args.admin_key or os.environ.get("TAO_AUTH__ADMIN_KEY"))
    return Loop(lambda: settings_from(args), admin, poll_s=args.poll, retry_s=args.retry_every).run(args.cycles)
