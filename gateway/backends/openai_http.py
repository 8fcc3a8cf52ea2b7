"""Direct HTTP to an OpenAI-compatible server: the fast path for `openai/...` and `hosted_vllm/...`
models with an `api_base` (vLLM, SGLang, TGI, llama.cpp, Ollama's /v1, another gateway).

Why not LiteLLM here: `litellm.acompletion` costs ~5 ms of CPU per call on a 2-core machine
(measured in `bench/overhead.py`), which caps a gateway at ~200 requests/s and adds ~5 ms to
every request. For servers that already speak the OpenAI wire format there is nothing to
translate, so one pooled aiohttp session posts the body as is. One attempt per call: failures
say whether they are worth retrying, and `UpstreamBackend` retries (and counts) them, for every
transport alike. Every other provider still goes through LiteLLM.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp
import orjson

from gateway.backends.base import Candidate, GenerationRequest, StreamDelta
from gateway.config import ModelConfig
from gateway.errors import RETRYABLE_STATUSES, UpstreamError, UpstreamTimeout

DIRECT_PROVIDERS = ("openai/", "hosted_vllm/")
CLIENT_FAULT = {400, 413, 422}


def is_openai_compatible(config: ModelConfig) -> bool:
    return bool(config.api_base) and config.model.startswith(DIRECT_PROVIDERS)


def _error_message(status: int, raw: bytes) -> str:
    try:
        detail = orjson.loads(raw)["error"]["message"]
    except Exception:  # noqa: BLE001 - any unparseable error body is shown raw
        detail = raw[:300].decode(errors="replace")
    return f"upstream returned HTTP {status}: {detail}"


def _json(raw: bytes) -> dict[str, Any]:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise UpstreamError(f"upstream sent invalid JSON: {exc}") from exc


def _candidates(data: dict[str, Any], kind: str) -> list[Candidate]:
    """The choices of a completion response; the reported completion tokens shared among them."""
    choices = data.get("choices") or []
    share = int((data.get("usage") or {}).get("completion_tokens") or 0) // max(len(choices), 1)
    if kind == "chat":
        return [Candidate(text=(c.get("message") or {}).get("content") or "", finish_reason=c.get("finish_reason"),
                          completion_tokens=share, message={"role": "assistant", **(c.get("message") or {})},
                          logprobs=c.get("logprobs"))
                for c in choices]
    return [Candidate(text=c.get("text") or "", finish_reason=c.get("finish_reason"), completion_tokens=share,
                      logprobs=c.get("logprobs"))
            for c in choices]


def _stream_delta(data: dict[str, Any], kind: str) -> StreamDelta:
    """One event of a streamed response (text, tool calls, finish reason or usage)."""
    if "error" in data:
        raise UpstreamError(f"upstream stream error: {data['error'].get('message')}")
    usage = data.get("usage") or {}
    delta = StreamDelta(prompt_tokens=usage.get("prompt_tokens"), completion_tokens=usage.get("completion_tokens"))
    for choice in data.get("choices") or []:
        delta.finish_reason = choice.get("finish_reason")
        delta.logprobs = choice.get("logprobs")
        if kind == "chat":
            piece = choice.get("delta") or {}
            delta.text = piece.get("content") or ""
            if piece.get("tool_calls"):
                delta.message_delta = {"tool_calls": piece["tool_calls"]}
        else:
            delta.text = choice.get("text") or ""
    return delta


class OpenAIHTTPTransport:
    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self.upstream_model = config.model.split("/", 1)[1]
        base = (config.api_base or "").rstrip("/")
        self.urls = {"chat": base + "/chat/completions", "completion": base + "/completions",
                     "embeddings": base + "/embeddings"}
        self.headers = {"Content-Type": "application/json"}
        if config.api_key:
            self.headers["Authorization"] = f"Bearer {config.api_key}"
        self._session: aiohttp.ClientSession | None = None
        # A stream's deadlines (first token, gaps, total) are kept by UpstreamBackend.stream.
        self._stream_timeout = aiohttp.ClientTimeout(total=None, sock_connect=config.timeout_s)

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
            timeout=aiohttp.ClientTimeout(total=self.config.timeout_s),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _body(self, request: GenerationRequest, n: int, stream: bool) -> bytes:
        body: dict[str, Any] = {"model": request.adapter or self.upstream_model, **request.params}
        if request.kind == "chat":
            body["messages"] = request.messages
        else:
            body["prompt"] = request.prompt
        if n > 1:
            body["n"] = n
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return orjson.dumps(body)

    @contextmanager
    def _failures(self, what: str) -> Iterator[None]:
        """aiohttp's failures as the engine's: a timeout is a 504, any other client error a 502
        worth retrying."""
        try:
            yield
        except TimeoutError as exc:
            raise UpstreamTimeout(f"upstream timed out after {self.config.timeout_s:g} s") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"upstream {what}: {type(exc).__name__}: {exc}", retryable=True) from exc

    async def _post(self, request: GenerationRequest, n: int, stream: bool) -> aiohttp.ClientResponse:
        return await self._send(self.urls[request.kind], self._body(request, n, stream), stream)

    async def _send(self, url: str, data: bytes, stream: bool = False) -> aiohttp.ClientResponse:
        """The response, status 200 (the caller reads and releases it); else the failure, one attempt."""
        assert self._session is not None, "transport not started"
        with self._failures("unreachable"):
            response = await self._session.post(url, data=data, headers=self.headers,
                                                **({"timeout": self._stream_timeout} if stream else {}))
            if response.status == 200:
                return response
            raw = await response.read()
            response.release()
        if response.status in CLIENT_FAULT:
            raise UpstreamError(_error_message(response.status, raw), status=400, upstream_status=response.status)
        raise UpstreamError(_error_message(response.status, raw), retryable=response.status in RETRYABLE_STATUSES,
                            upstream_status=response.status)

    async def call(self, request: GenerationRequest, n: int) -> tuple[list[Candidate], int]:
        response = await self._post(request, n, stream=False)
        try:
            with self._failures("response broke"):
                raw = await response.read()
        finally:
            response.release()
        data = _json(raw)
        usage = data.get("usage") or {}
        return _candidates(data, request.kind), int(usage.get("prompt_tokens") or 0)

    async def embed(self, body: dict[str, Any]) -> dict[str, Any]:
        response = await self._send(self.urls["embeddings"], orjson.dumps({**body, "model": self.upstream_model}))
        try:
            with self._failures("response broke"):
                return _json(await response.read())
        finally:
            response.release()

    async def stream(self, request: GenerationRequest) -> AsyncIterator[StreamDelta]:
        response = await self._post(request, 1, stream=True)
        try:
            with self._failures("stream broke"):
                async for raw_line in response.content:
                    line = raw_line.strip()
                    if not line.startswith(b"data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == b"[DONE]":
                        break
                    delta = _stream_delta(_json(payload), request.kind)
                    if delta.text or delta.finish_reason or delta.message_delta or delta.completion_tokens \
                            or delta.logprobs:
                        yield delta
        finally:
            response.release()
