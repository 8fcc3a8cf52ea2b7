"""Streamed replies as server-sent events in OpenAI's chunk format.

Two shapes: `replay` sends best-of-N winners, already chosen, as streams (a role or empty chunk,
the text, a finish chunk; `tao` rides on the last choice's finish chunk), and `stream_through`
passes an N=1 reply on token by token as the upstream sends it. Both end with a usage chunk when
the client asked for one (`stream_options.include_usage`) and `[DONE]`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import orjson

from gateway.backends import StreamDelta
from gateway.bestofn import Outcome, StreamedReply
from gateway.errors import UpstreamError, from_upstream
from gateway.protocol import Usage
from gateway.request import ServeRequest

DONE = b"data: [DONE]\n\n"


def event(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def _object(req: ServeRequest) -> str:
    return "chat.completion.chunk" if req.endpoint == "chat" else "text_completion"


def chunk(req: ServeRequest, index: int, text: str | None, finish: str | None,
          delta: dict[str, Any] | None = None, logprobs: Any = None, **extra: Any) -> dict[str, Any]:
    """One choice's piece: a chat `delta` (text as its content) or a completion `text`."""
    if req.endpoint == "chat":
        choice_delta = dict(delta or {})
        if text:
            choice_delta["content"] = text
        choice = {"index": index, "delta": choice_delta, "finish_reason": finish, "logprobs": logprobs}
    else:
        choice = {"index": index, "text": text or "", "finish_reason": finish, "logprobs": logprobs}
    return {"id": req.request_id, "object": _object(req), "created": int(req.created), "model": req.model.name,
            "choices": [choice], **extra}


def usage_chunk(req: ServeRequest, usage: Usage) -> dict[str, Any]:
    return {"id": req.request_id, "object": _object(req), "created": int(req.created), "model": req.model.name,
            "choices": [], "usage": usage.model_dump()}


def _wants_usage(req: ServeRequest) -> bool:
    return bool((req.body.stream_options or {}).get("include_usage"))


async def replay(req: ServeRequest, outcome: Outcome) -> AsyncIterator[bytes]:
    """best_of > 1: the winners are known; send each as a stream."""
    last = len(outcome.choices) - 1
    for i, c in enumerate(outcome.choices):
        yield event(chunk(req, i, None, None, delta={"role": "assistant"}) if req.endpoint == "chat"
                    else chunk(req, i, "", None))
        calls = (c.message or {}).get("tool_calls") or []  # a stream's tool calls carry their index
        tool_calls = {"tool_calls": [{"index": k, **call} for k, call in enumerate(calls)]} if calls else None
        yield event(chunk(req, i, c.text, None, delta=tool_calls, logprobs=c.logprobs))
        tao = {"tao": outcome.tao.model_dump()} if i == last else {}
        yield event(chunk(req, i, None, c.finish_reason, **tao))
    if _wants_usage(req):
        yield event(usage_chunk(req, outcome.usage))
    yield DONE


async def stream_through(req: ServeRequest, reply: StreamedReply, first: StreamDelta | None,
                         deltas: AsyncGenerator[StreamDelta, None]) -> AsyncIterator[bytes]:
    """best_of = 1: tokens go straight from the upstream to the client. `first` was pulled before
    the response started (so an upstream failure could still set the status code); a failure
    after that is sent as an error event."""
    if req.endpoint == "chat":
        yield event(chunk(req, 0, None, None, delta={"role": "assistant"}))
    try:
        delta = first
        while delta is not None:
            if delta.text or delta.message_delta or delta.logprobs:
                yield event(chunk(req, 0, delta.text, None, delta=delta.message_delta, logprobs=delta.logprobs))
            delta = await anext(deltas, None)
    except UpstreamError as exc:
        yield event(from_upstream(exc).body())
        return
    finally:
        await deltas.aclose()
    yield event(chunk(req, 0, None, reply.finish_reason or "stop", tao=reply.tao.model_dump()))
    if _wants_usage(req):
        yield event(usage_chunk(req, reply.usage()))
    yield DONE
