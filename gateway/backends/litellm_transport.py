"""The LiteLLM transport: one upstream call through LiteLLM's async API, for any provider it
speaks (OpenAI, Anthropic, Bedrock, Ollama, ...), with its provider quirks. One attempt per call:
`UpstreamBackend` retries (and counts) retryable failures, as for the direct transport."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import litellm

from gateway.backends.base import Candidate, GenerationRequest, StreamDelta
from gateway.config import ModelConfig
from gateway.errors import RETRYABLE_STATUSES, UpstreamError, UpstreamTimeout

litellm.suppress_debug_info = True


def _translate(exc: Exception) -> UpstreamError:
    """LiteLLM's exception for a failed call, as the status the client should see and whether
    another attempt may succeed (`UpstreamBackend` retries; LiteLLM is asked for none)."""
    if isinstance(exc, litellm.Timeout):
        return UpstreamTimeout(f"upstream timed out: {exc}")
    if isinstance(exc, litellm.BadRequestError):
        return UpstreamError(f"upstream rejected the request: {exc}", status=400)
    if isinstance(exc, UpstreamError):
        return exc
    status = getattr(exc, "status_code", None)
    retryable = isinstance(exc, litellm.APIConnectionError) or status in RETRYABLE_STATUSES
    return UpstreamError(f"upstream failed: {type(exc).__name__}: {exc}", retryable=retryable,
                         upstream_status=status if isinstance(status, int) else None)


def _plain(value: Any) -> Any:
    """LiteLLM's object for a field (logprobs) as the plain JSON the client gets."""
    return value.model_dump() if hasattr(value, "model_dump") else value


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
                                  "num_retries": 0, **request.params}
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
                                        completion_tokens=0, message=_chat_message(c.message),
                                        logprobs=_plain(getattr(c, "logprobs", None)))
                              for c in response.choices]
            else:
                response = await litellm.atext_completion(**kwargs)
                candidates = [Candidate(text=c.text or "", finish_reason=c.finish_reason, completion_tokens=0,
                                        logprobs=_plain(getattr(c, "logprobs", None)))
                              for c in response.choices]
        except Exception as exc:  # noqa: BLE001 - every provider error becomes a status for the client
            raise _translate(exc) from exc
        usage = getattr(response, "usage", None)
        # Providers report one completion total per call; spread it evenly over the choices.
        share = int(getattr(usage, "completion_tokens", 0) or 0) // max(len(candidates), 1)
        for candidate in candidates:
            candidate.completion_tokens = share
        return candidates, int(getattr(usage, "prompt_tokens", 0) or 0)

    async def embed(self, body: dict[str, Any]) -> dict[str, Any]:
        kwargs = {**body, "model": self.config.model, "timeout": self.config.timeout_s, "num_retries": 0}
        kwargs.update({k: v for k, v in (("api_base", self.config.api_base), ("api_key", self.config.api_key)) if v})
        try:
            response = await litellm.aembedding(**kwargs)
        except Exception as exc:  # noqa: BLE001
            raise _translate(exc) from exc
        return _plain(response)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[StreamDelta]:
        kwargs = self._kwargs(request, 1)
        # A stream's deadlines (first token, gaps, total) are kept by UpstreamBackend.stream.
        kwargs.update(stream=True, stream_options={"include_usage": True}, timeout=self.config.stream_timeout_s)
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
                    delta.logprobs = _plain(getattr(choice, "logprobs", None))
                    if request.kind == "chat":
                        delta.text = choice.delta.content or ""
                        tool_calls = getattr(choice.delta, "tool_calls", None)
                        if tool_calls:
                            delta.message_delta = {"tool_calls": [t.model_dump() for t in tool_calls]}
                    else:
                        delta.text = choice.text or ""
                if delta.text or delta.finish_reason or delta.message_delta or delta.completion_tokens or delta.logprobs:
                    yield delta
        except Exception as exc:  # noqa: BLE001
            raise _translate(exc) from exc
