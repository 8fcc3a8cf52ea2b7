"""`tao serve`: run the gateway."""

from __future__ import annotations

import argparse
import logging
import os

from gateway.config import StoreConfig, default_models
from tao.commands.common import config_flag, settings_from
from tao.flags import show_default

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    embedded = default_models()[0]
    serve = sub.add_parser(
        "serve", help="run the gateway",
        description="Serve /v1/chat/completions, /v1/completions, /v1/models, /healthz and /metrics. "
        f"With no --config it serves the embedded SmolLM2-135M-Instruct as model '{embedded.name}' on this "
        f"CPU, best_of {embedded.best_of} by default, with the built-in instruction-following scorer, "
        f"logging to {show_default(StoreConfig().path)}.",
    )
    config_flag(serve)
    serve.add_argument("--host", default="127.0.0.1", help="(default: %(default)s)")
    serve.add_argument("--port", type=int, default=8000, help="(default: %(default)s)")
    serve.add_argument("--access-log", action="store_true", help="log every HTTP request line")
    serve.add_argument("--workers", type=int, default=1,
                       help="gateway processes sharing the port (default: %(default)s); each keeps its own log writer "
                       "and journal on the one store, and one of them decides rollouts. /metrics answers for the "
                       "worker that takes the scrape")
    serve.add_argument("--allow-unauthenticated", action="store_true",
                       help="listen beyond loopback with no API keys (auth.allow_unauthenticated); without it "
                       "`tao serve --host 0.0.0.0` refuses to start until auth.api_keys is set")
    serve.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from gateway.app import SETTINGS_ENV, create_app
    from gateway.auth import ExposedWithoutKeys, check_exposure
    from gateway.server import serve, serve_workers

    settings = settings_from(args)
    if args.allow_unauthenticated:
        settings.auth.allow_unauthenticated = True
    try:
        check_exposure(args.host, settings.auth)
    except ExposedWithoutKeys as exc:
        raise SystemExit(f"tao serve: {exc}") from None
    options = {"log_level": args.log_level.lower(), "access_log": args.access_log}
    if args.workers > 1:
        if any(m.backend == "local" for m in settings.models):
            log.warning("--workers %d with the local backend loads the model in every worker, and the workers share "
                        "the CPU", args.workers)
        os.environ[SETTINGS_ENV] = settings.model_dump_json()
        serve_workers("gateway.app:app_from_environment", args.host, args.port, settings.server, args.workers,
                      **options)
        return 0
    serve(create_app(settings), args.host, args.port, settings.server, **options)
    return 0
