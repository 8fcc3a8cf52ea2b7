"""Run an ASGI app with uvicorn on a free loopback port in a background thread.

For `tao demo` (which drives its own gateway) and for tests: a real HTTP server, lifespan included.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from gateway.config import ServerConfig
from gateway.server import uvicorn_config


def free_port() -> int:
    """A loopback port the OS says is free now, for a server the caller starts next."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve_in_thread(app: Any, *, server_config: ServerConfig | None = None,
                    startup_timeout_s: float = 120.0, port: int | None = None) -> Iterator[str]:
    """Serve `app` on 127.0.0.1:`port` (default: a free one); yields the base URL; shuts down gracefully
    after. A gateway passes its `server_config` to run with the limits `tao serve` has; a test restarts
    a server on its old port to bring it back."""
    port = port or free_port()
    options = {"log_level": "warning", "access_log": False, "lifespan": "on"}
    config = (uvicorn_config(app, "127.0.0.1", port, server_config, **options) if server_config
              else uvicorn.Config(app, host="127.0.0.1", port=port, **options))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout_s
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("server failed to start")
        if time.monotonic() > deadline:
            raise TimeoutError("server did not start in time")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(60)
