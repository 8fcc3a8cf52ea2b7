"""`tao`: the command line. Each subcommand mirrors a Python entry point."""

from __future__ import annotations

import argparse
import logging
import sys

from gateway import __version__


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    for noisy in ("LiteLLM", "litellm", "httpx", "httpcore"):
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
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    _setup_logging(args.log_level)
    sys.exit(args.run(args))
