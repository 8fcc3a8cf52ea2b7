"""Running the app under uvicorn with limits a public endpoint needs.

uvicorn closes idle keep-alive connections, but a connection that sends its request headers one
byte at a time (slowloris) is never timed out: a thousand of them used up the open-file limit and
every normal request failed. `_HeaderDeadline` gives each request's headers a deadline
(`server.header_timeout_s`), and `serve` raises the soft open-file limit to the hard one, so a
burst of slow clients is closed in seconds instead of starving everyone else. Request bodies
have their own deadline and size limit in `gateway.limits`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools is not installed: uvicorn's h11 protocol only
    HttpToolsProtocol = None

from gateway.config import ServerConfig

log = logging.getLogger(__name__)


class _HeaderDeadline:
    """A deadline for each request's headers to arrive in full, mixed into uvicorn's protocols."""

    header_timeout_s = 10.0
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # type: ignore[misc]
        self._arm_header_timer()

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)  # type: ignore[attr-defined]

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def on_response_complete(self) -> None:
        if not self.transport.is_closing():  # type: ignore[attr-defined]
            self._arm_header_timer()  # the next request on this connection gets a deadline too
        super().on_response_complete()  # type: ignore[misc]

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)  # type: ignore[misc]

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():  # type: ignore[attr-defined]
            self.transport.close()  # type: ignore[attr-defined]


class GuardedH11Protocol(_HeaderDeadline, H11Protocol):
    def handle_events(self) -> None:
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle:  # a request's headers arrived: the app has it now
            self._cancel_header_timer()


GuardedHttpToolsProtocol: type | None = None
if HttpToolsProtocol is not None:
    class GuardedHttpToolsProtocol(_HeaderDeadline, HttpToolsProtocol):  # type: ignore[no-redef]
        def on_headers_complete(self) -> None:
            self._cancel_header_timer()
            super().on_headers_complete()


def protocol_for(config: ServerConfig) -> type:
    """httptools (faster, what uvicorn picks when installed) with the header deadline, else h11."""
    base = GuardedHttpToolsProtocol or GuardedH11Protocol
    return type("ConfiguredProtocol", (base,), {"header_timeout_s": config.header_timeout_s})


def raise_open_file_limit() -> None:
    """Raise the soft limit on open files to the hard limit: each client connection is a file."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        log.debug("open-file limit raised from %d to %d", soft, target)


def uvicorn_config(app: Any, host: str, port: int, config: ServerConfig, **options: Any) -> uvicorn.Config:
    """The uvicorn config the gateway runs with (`tao serve` and the in-process test servers)."""
    return uvicorn.Config(app, host=host, port=port, http=protocol_for(config), timeout_keep_alive=int(
        max(1, config.keep_alive_s)), timeout_graceful_shutdown=int(config.graceful_shutdown_s), **options)


def serve(app: Any, host: str, port: int, config: ServerConfig, **options: Any) -> None:
    raise_open_file_limit()
    uvicorn.Server(uvicorn_config(app, host, port, config, **options)).run()


HEADER_TIMEOUT_ENV = "TAO_HEADER_TIMEOUT_S"


class WorkerProtocol(GuardedHttpToolsProtocol or GuardedH11Protocol):  # type: ignore[misc]
    """The protocol of `--workers` processes. uvicorn starts them by spawning and hands them the
    protocol by import path, so the header deadline comes from the environment `serve_workers` sets."""

    header_timeout_s = float(os.environ.get(HEADER_TIMEOUT_ENV, ServerConfig().header_timeout_s))


def serve_workers(factory: str, host: str, port: int, config: ServerConfig, workers: int, **options: Any) -> None:
    """`workers` processes sharing one listening socket, each building its app with `factory` (an
    import path; uvicorn's supervisor restarts a worker that dies and stops them all on SIGTERM)."""
    from uvicorn.supervisors import Multiprocess

    raise_open_file_limit()
    os.environ[HEADER_TIMEOUT_ENV] = str(config.header_timeout_s)
    settings = uvicorn.Config(factory, factory=True, host=host, port=port, workers=workers,
                              http="gateway.server:WorkerProtocol", timeout_keep_alive=int(max(1, config.keep_alive_s)),
                              timeout_graceful_shutdown=int(config.graceful_shutdown_s), **options)
    Multiprocess(settings, sockets=[settings.bind_socket()]).run()
