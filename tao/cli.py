"""`tao`: the command line. Each subcommand mirrors a Python entry point.

Each command is a module of `tao.commands` holding its flags (`add_parser`) beside the function
that runs it. Flags that set a config value are generated from the config models (`tao.flags`), so
each default is stated once, in its model, and `--help` shows it. Heavy modules (the server, the
trainers) are imported by the command that needs them, so `tao --help` stays quick.
"""

from __future__ import annotations

import argparse
import logging
import sys

from gateway import __version__
from tao.commands import demo, distill, logs, loop, model, reward, rollout, serve, vllm

COMMANDS = (serve, distill, rollout, loop, demo, reward, model, vllm, logs)  # in the order `tao --help` lists them


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    for noisy in ("LiteLLM", "litellm", "httpx", "httpx2", "httpcore", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: the global flags, then each command's own."""
    parser = argparse.ArgumentParser(
        prog="tao",
        description="TAO Gateway: an OpenAI-compatible best-of-N proxy. It samples N candidates, returns "
        "the one a reward model scores best, and logs every candidate to SQLite for distillation.",
    )
    parser.add_argument("--version", action="version", version=f"tao-gateway {__version__}")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    _setup_logging(args.log_level)
    sys.exit(args.run(args))
