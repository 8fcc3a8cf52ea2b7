"""Remote models: any provider LiteLLM speaks (OpenAI, Anthropic, vLLM servers, Ollama, ...).

We own the N strategy: ask for all N candidates in one upstream call when the provider honours
`n` (the prompt is processed once), and fan out the missing ones concurrently when it does not.
The call itself goes through a transport: LiteLLM's async API (provider quirks, retries), or,
for servers that already speak the OpenAI wire format, the direct HTTP fast path
(`openai_http.py`, see there for why).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any, Protocol

import httpx
import litellm

from gateway.backends.base import Candidate, Generation, GenerationRequest, StreamDelta
from gateway.backends.openai_http import OpenAIHTTPTransport, is_openai_compatible
from gateway.config import ModelConfig
from gateway.errors import UpstreamError, UpstreamTimeout

log = logging.getLogger(__name__)

litellm.suppress_debug_info = True


class Transport(Protocol):
    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def call(self, request: GenerationRequest, n: int) -> tuple[list[Candidate], int]: ...
    def stream(self, request: GenerationRequest) -> AsyncIterator[StreamDelta]: ...


def _translate(exc: Exception) -> UpstreamError:
    """LiteLLM's exception for a failed call, as the status the client should see."""
    if isinstance(exc, UpstreamError):
        return exc
    if isinstance(exc, litellm.Timeout):
        return UpstreamTimeout(f"upstream timed out: {exc}")
    if isinstance(exc, litellm.BadRequestError):
        return UpstreamError(f"upstream rejected the request: {exc}", status=400)
    return UpstreamError(f"upstream failed: {type(exc).__name__}: {exc}")


def _chat_message(message: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"role": "assistant", "content": message.content}
    tool_calls = getattr(message, "tool_calls", None)
    if tool_calls:
        out["tool_calls"] = [t.model_dump() if hasattr(t, "model_dump") else dict(t) for t in tool_calls]
    return out


class LiteLLMTransport:
    def __init__(self, config: ModelConfig) -> None:
        self.config = config

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def _kwargs(self, request: GenerationRequest, n: int) -> dict[str, Any]:
        model = self.config.model
        if request.adapter:  # a LoRA adapter loaded into the server is addressed as a model name
            model = f"{model.split('/', 1)[0]}/{request.adapter}"
        kwargs: dict[str, Any] = {"model": model, "timeout": self.config.timeout_s,
                                  "num_retries": self.config.num_retries, **request.params}
        if n > 1:
            kwargs["n"] = n
        if self.config.api_base:
            kwargs["api_base"] = self.config.api_base
        if self.config.api_key:
            kwargs["api_key"] = self.config.api_key
        if request.kind == "chat":
            kwargs["messages"] = request.messages
        else:
            kwargs["prompt"] = request.prompt
        return kwargs

    async def call(self, request: GenerationRequest, n: int) -> tuple[list[Candidate], int]:
        kwargs = self._kwargs(request, n)
        try:
            if request.kind == "chat":
                response = await litellm.acompletion(**kwargs)
                candidates = [Candidate(text=c.message.content or "", finish_reason=c.finish_reason,
                                        completion_tokens=0, message=_chat_message(c.message))
                              for c in response.choices]
            else:
                response = await litellm.atext_completion(**kwargs)
                candidates = [Candidate(text=c.text or "", finish_reason=c.finish_reason, completion_tokens=0)
                              for c in response.choices]
        except Exception as exc:  # noqa: BLE001 - every provider error becomes a status for the client
            raise _translate(exc) from exc
        usage = getattr(response, "usage", None)
        # Providers report one completion total per call; spread it evenly over the choices.
        share = int(getattr(usage, "completion_tokens", 0) or 0) // max(len(candidates), 1)
        for candidate in candidates:
            candidate.completion_tokens = share
        return candidates, int(getattr(usage, "prompt_tokens", 0) or 0)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[StreamDelta]:
        kwargs = self._kwargs(request, 1)
        kwargs.update(stream=True, stream_options={"include_usage": True})
        try:
            if request.kind == "chat":
                response = await litellm.acompletion(**kwargs)
            else:
                response = await litellm.atext_completion(**kwargs)
            async for chunk in response:
                usage = getattr(chunk, "usage", None)
                delta = StreamDelta(prompt_tokens=getattr(usage, "prompt_tokens", None) if usage else None,
                                    completion_tokens=getattr(usage, "completion_tokens", None) if usage else None)
                if chunk.choices:
                    choice = chunk.choices[0]
                    delta.finish_reason = choice.finish_reason
                    if request.kind == "chat":
                        delta.text = choice.delta.content or ""
                        tool_calls = getattr(choice.delta, "tool_calls", None)
                        if tool_calls:
                            delta.message_delta = {"tool_calls": [t.model_dump() for t in tool_calls]}
                    else:
                        delta.text = choice.text or ""
                if delta.text or delta.finish_reason or delta.message_delta or delta.completion_tokens:
                    yield delta
        except Exception as exc:  # noqa: BLE001
            raise _translate(exc) from exc


def choose_transport(config: ModelConfig) -> Transport:
    direct = config.transport == "direct" or (config.transport == "auto" and is_openai_compatible(config))
    if direct and not is_openai_compatible(config):
        raise ValueError(f"model {config.name}: transport 'direct' needs an api_base and an openai/ or "
                         f"hosted_vllm/ model string, got {config.model!r}")
    return OpenAIHTTPTransport(config) if direct else LiteLLMTransport(config)


class LiteLLMBackend:
    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self.model_version = config.version or config.model
        self.transport = choose_transport(config)
        # Learned on first use under n_strategy=auto: does the provider return n choices per call?
        self._native_n = config.n_strategy != "fanout"

    async def start(self) -> None:
        await self.transport.start()

    async def close(self) -> None:
        await self.transport.close()

    def stream(self, request: GenerationRequest) -> AsyncIterator[StreamDelta]:
        return self.transport.stream(request)

    async def load_adapter(self, name: str, path: str) -> None:
        """vLLM's runtime LoRA loading (the server runs with --enable-lora and
        VLLM_ALLOW_RUNTIME_LORA_UPDATING=1); the adapter is then addressed by `name`."""
        if not self.config.api_base:
            raise UpstreamError(f"model {self.config.name} has no api_base to load a LoRA adapter into")
        url = self.config.api_base.rstrip("/") + "/load_lora_adapter"
        headers = {"Authorization": f"Bearer {self.config.api_key}"} if self.config.api_key else {}
        try:
            async with httpx.AsyncClient(timeout=self.config.timeout_s) as client:
                response = await client.post(url, json={"lora_name": name, "lora_path": path}, headers=headers)
        except httpx.HTTPError as exc:
            raise UpstreamError(f"loading adapter {name} failed: {exc}") from exc
        if response.status_code != 200:
            raise UpstreamError(f"loading adapter {name} failed: HTTP {response.status_code}: {response.text[:300]}")

    async def _fan_out(self, request: GenerationRequest, count: int) -> tuple[list[Candidate], int, list[Exception]]:
        results = await asyncio.gather(*(self.transport.call(request, 1) for _ in range(count)),
                                       return_exceptions=True)
        candidates: list[Candidate] = []
        prompt_tokens = 0
        failures: list[Exception] = []
        for result in results:
            if isinstance(result, BaseException):
                failures.append(result)
            else:
                candidates.extend(result[0])
                prompt_tokens = prompt_tokens or result[1]
        return candidates, prompt_tokens, failures

    async def generate(self, request: GenerationRequest) -> Generation:
        n = request.n
        if n == 1:
            candidates, prompt_tokens = await self.transport.call(request, 1)
            return self._finish(candidates, prompt_tokens, 1, [])
        if not self._native_n:
            candidates, prompt_tokens, failures = await self._fan_out(request, n)
            return self._finish(candidates, prompt_tokens, n, failures)
        try:
            candidates, prompt_tokens = await self.transport.call(request, n)
        except UpstreamError as exc:
            if exc.status != 400 or self.config.n_strategy == "native":
                raise
            # Some providers refuse `n` outright; fall back to one call per candidate.
            log.info("model %s rejected n=%d (%s); fanning out", self.config.name, n, exc)
            self._native_n = False
            candidates, prompt_tokens, failures = await self._fan_out(request, n)
            return self._finish(candidates, prompt_tokens, 1 + n, failures)
        calls, failures = 1, []
        missing = n - len(candidates)
        if missing > 0 and self.config.n_strategy == "auto":
            log.info("model %s returned %d of %d choices; fanning out from now on", self.config.name,
                     len(candidates), n)
            self._native_n = False
            extra, _, failures = await self._fan_out(request, missing)
            candidates.extend(extra)
            calls += missing
        return self._finish(candidates, prompt_tokens, calls, failures)

    @staticmethod
    def _finish(candidates: list[Candidate], prompt_tokens: int, calls: int, failures: list[Exception]) -> Generation:
        if not candidates:
            errors = [_translate(f) for f in failures] or [UpstreamError("upstream returned no choices")]
            # All timed out: 504; otherwise the first non-timeout error decides.
            raise next((e for e in errors if not isinstance(e, UpstreamTimeout)), errors[0])
        return Generation(candidates=candidates, prompt_tokens=prompt_tokens, upstream_calls=calls,
                          failures=[str(f) for f in failures])
