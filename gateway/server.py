"""Running the app under uvicorn with limits a public endpoint needs.

uvicorn closes idle keep-alive connections, but a connection that sends its request headers one
byte at a time (slowloris) is never timed out: a thousand of them used up the open-file limit and
every normal request failed. `GuardedH11Protocol` gives each request's headers a deadline
(`server.header_timeout_s`), and `serve` raises the soft open-file limit to the hard one, so a
burst of slow clients is closed in seconds instead of starving everyone else. Request bodies
have their own deadline and size limit in `gateway.limits`.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from gateway.config import ServerConfig

log = logging.getLogger(__name__)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, plus a deadline for each request's headers to arrive in full."""

    header_timeout_s = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._header_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._arm_header_timer()

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def handle_events(self) -> None:
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle:  # a request's headers arrived: the app has it now
            self._cancel_header_timer()

    def on_response_complete(self) -> None:
        if not self.transport.is_closing():
            self._arm_header_timer()  # the next request on this connection gets a deadline too
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()


def protocol_for(config: ServerConfig) -> type[GuardedH11Protocol]:
    return type("ConfiguredH11Protocol", (GuardedH11Protocol,), {"header_timeout_s": config.header_timeout_s})


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
