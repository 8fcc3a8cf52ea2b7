"""`tao demo`: the whole TAO loop on the embedded model, and its report."""

from __future__ import annotations

import argparse

from tao.demo.config import DemoConfig
from tao.flags import add_field_flags, field_values


def add_parser(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser(
        "demo", help="run the whole TAO loop on the embedded model and report",
        description="Serve the embedded SmolLM2, send generated instruction-following prompts at best-of-N, "
        "distill the log, roll the checkpoint out at the cheapest best-of-k distill chose (held-out, then fresh "
        "prompts) and let the policy decide, then write a report (table, report.html, report.json, PNG plots) "
        "computed from the SQLite log. Offline, on this CPU: about 13 minutes with the defaults on 2 cores.")
    add_field_flags(demo, DemoConfig, "demo")
    demo.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from tao.demo.run import run_demo

    return run_demo(DemoConfig.model_validate(field_values(args, "demo")))
