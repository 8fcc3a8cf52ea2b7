"""What the commands share: reading the config with a command's flags applied, and the time
formats their flags take."""

from __future__ import annotations

import argparse
import datetime as dt
import math
import time

from pydantic import ValidationError

from gateway.config import Settings, load_settings, with_updates
from tao.flags import explain, field_values

DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


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


def settings_from(args: argparse.Namespace) -> Settings:
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


def config_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="tao.yaml (default: $TAO_CONFIG, else built-in defaults)")
