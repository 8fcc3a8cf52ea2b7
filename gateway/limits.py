"""Limits on what one request can make the gateway hold: body size, time to send it, JSON depth.

Without them a 100 MB message was accepted whole, a client that trickles its body held a worker
forever, and a body nested ~500 deep reached orjson's recursion limit while the upstream body was
built (a 500). Each limit answers with an OpenAI error object and the status that names it: 413,
408, 400.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import APIError


class BodyTooLarge(APIError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body exceeds the gateway's limit of {limit} bytes (server.max_body_mb)",
                         code="request_too_large")


class BodyLimitMiddleware:
    """413 before reading a body whose Content-Length is over the limit; a chunked body is counted as
    it arrives and refused once it passes the limit (the app's exception handler answers)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            body = orjson.dumps(BodyTooLarge(self.max_bytes).body())
            await send({"type": "http.response.start", "status": 413,
                        "headers": [(b"content-type", b"application/json"), (b"connection", b"close")]})
            await send({"type": "http.response.body", "body": body})
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, counting_receive, send)


async def read_body(read: Any, timeout_s: float) -> bytes:
    """The whole body, or 408 when the client takes longer than `timeout_s` to send it."""
    try:
        return await asyncio.wait_for(read(), timeout_s)
    except TimeoutError:
        raise APIError(408, f"the request body did not arrive within {timeout_s:g} s (server.body_timeout_s)",
                       code="request_timeout") from None


def check_depth(data: Any, max_depth: int) -> None:
    """400 when objects and arrays nest deeper than `max_depth` (checked without recursion)."""
    level: list[Any] = [data]
    depth = 0
    while level:
        depth += 1
        if depth > max_depth:
            raise APIError(400, f"request body nests deeper than {max_depth} levels (server.max_json_depth)",
                           code="too_deep")
        nxt: list[Any] = []
        for value in level:
            if isinstance(value, dict):
                nxt.extend(v for v in value.values() if isinstance(v, (dict, list)))
            elif isinstance(value, list):
                nxt.extend(v for v in value if isinstance(v, (dict, list)))
        level = nxt
