"""Remote models: a server or provider reached over the network (`backend: litellm` in the config).

We own the N strategy: ask for all N candidates in one upstream call when the provider honours
`n` (the prompt is processed once), and fan out the missing ones concurrently when it does not.
The call itself goes through a transport: LiteLLM (`litellm_transport.py`: every provider, their
quirks and retries), or, for servers that already speak the OpenAI wire format, the direct HTTP
fast path (`openai_http.py`, see there for why).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, TypeVar

import httpx

from gateway.backends.base import Candidate, Generation, GenerationRequest, StreamDelta
from gateway.backends.litellm_transport import LiteLLMTransport
from gateway.backends.openai_http import OpenAIHTTPTransport, is_openai_compatible
from gateway.config import ModelConfig
from gateway.errors import UpstreamError, UpstreamTimeout, as_upstream_error

log = logging.getLogger(__name__)

RETRY_DELAY_S = 0.1  # the first retry's wait; doubled per retry up to MAX_RETRY_DELAY_S
MAX_RETRY_DELAY_S = 2.0
FIRST_TOKEN = "for the first token"
T = TypeVar("T")


class Transport(Protocol):
    """One upstream call: `call` returns (candidates, prompt tokens); both raise UpstreamError."""

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def call(self, request: GenerationRequest, n: int) -> tuple[list[Candidate], int]: ...
    async def embed(self, body: dict[str, Any]) -> dict[str, Any]: ...
    def stream(self, request: GenerationRequest) -> AsyncIterator[StreamDelta]: ...


def choose_transport(config: ModelConfig) -> Transport:
    direct = config.transport == "direct" or (config.transport == "auto" and is_openai_compatible(config))
    if direct and not is_openai_compatible(config):
        raise ValueError(f"model {config.name}: transport 'direct' needs an api_base and an openai/ or "
                         f"hosted_vllm/ model string, got {config.model!r}")
    return OpenAIHTTPTransport(config) if direct else LiteLLMTransport(config)


class UpstreamBackend:
    """A remote model behind a transport; this side decides how N candidates are asked for."""

    def __init__(self, config: ModelConfig, on_retry: Callable[[], None] | None = None) -> None:
        self.config = config
        self.model_version = config.version or config.model
        self.transport = choose_transport(config)
        self._on_retry = on_retry or (lambda: None)
        self._adapters: dict[str, str] = {}  # name -> path of the LoRA adapters this gateway loaded
        # Learned on first use under n_strategy=auto: does the provider return n choices per call?
        self._native_n = config.n_strategy != "fanout"

    async def start(self) -> None:
        await self.transport.start()

    async def close(self) -> None:
        await self.transport.close()

    async def stream(self, request: GenerationRequest) -> AsyncIterator[StreamDelta]:
        """The transport's stream under three deadlines: the first token, the gap between chunks,
        and the whole stream (a total deadline alone cut streams that were still producing)."""
        config = self.config
        chunks = aiter(self.transport.stream(request))
        finish_by = time.monotonic() + config.stream_timeout_s
        wait, what = config.first_token_timeout_s or config.timeout_s, FIRST_TOKEN
        retries, delay, reloaded = 0, RETRY_DELAY_S, False
        try:
            while True:
                left = finish_by - time.monotonic()
                limit, why = (wait, what) if wait < left else (left, "for the whole stream")
                try:
                    async with asyncio.timeout(max(limit, 0)):
                        delta = await anext(chunks)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    raise UpstreamTimeout(f"upstream stream timed out: {limit:g} s {why}") from None
                except UpstreamError as exc:  # before the first chunk a stream can start over
                    if what != FIRST_TOKEN:
                        raise
                    if not reloaded and await self._reload_if_lost(request, exc):
                        reloaded = True
                    else:
                        if not exc.retryable or retries == config.num_retries:
                            raise
                        await asyncio.sleep(delay)
                    retries += 1
                    self._on_retry()
                    await chunks.aclose()
                    delay = min(delay * 2, MAX_RETRY_DELAY_S)
                    chunks = aiter(self.transport.stream(request))
                    continue
                yield delta
                wait, what = config.stream_idle_timeout_s, "between chunks"
        finally:
            await chunks.aclose()

    async def _call(self, request: GenerationRequest, n: int) -> tuple[list[Candidate], int]:
        return await self._retrying(lambda: self.transport.call(request, n), request)

    async def embed(self, body: dict[str, Any]) -> dict[str, Any]:
        """The upstream's /embeddings answer for `body` (its `model` replaced by the upstream's)."""
        return await self._retrying(lambda: self.transport.embed(body))

    async def _retrying(self, attempt: Callable[[], Awaitable[T]], request: GenerationRequest | None = None) -> T:
        """One upstream call, retried `num_retries` times with exponential backoff when the failure
        is retryable (each retry counted: the upstream sees calls + retries requests)."""
        delay = RETRY_DELAY_S
        reloaded = False
        for tries in range(self.config.num_retries + 1):
            try:
                return await attempt()
            except UpstreamError as exc:
                if request is not None and not reloaded and await self._reload_if_lost(request, exc):
                    reloaded = True
                    self._on_retry()
                    return await attempt()
                if not exc.retryable or tries == self.config.num_retries:
                    raise
            self._on_retry()
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RETRY_DELAY_S)
        raise AssertionError("unreachable")

    async def load_adapter(self, name: str, path: str) -> None:
        """vLLM's runtime LoRA loading (the server runs with --enable-lora and
        VLLM_ALLOW_RUNTIME_LORA_UPDATING=1); the adapter is then addressed by `name`. An adapter the
        server already holds (a gateway restart) counts as loaded: vLLM answers 400 "has already been
        loaded" for it."""
        response = await self._lora_call("load_lora_adapter", {"lora_name": name, "lora_path": path}, name)
        if response.status_code != 200 and not (response.status_code == 400 and "already been loaded" in response.text):
            raise UpstreamError(f"loading adapter {name} failed: HTTP {response.status_code}: {response.text[:300]}",
                                upstream_status=response.status_code)
        if response.status_code != 200:
            log.info("adapter %s was already loaded on %s; using it", name, self.config.name)
        self._adapters[name] = path

    async def unload_adapter(self, name: str) -> None:
        """Free the adapter on the server (a rollback); one the server no longer holds (404) is gone anyway."""
        self._adapters.pop(name, None)
        response = await self._lora_call("unload_lora_adapter", {"lora_name": name}, name)
        if response.status_code not in (200, 404):
            raise UpstreamError(f"unloading adapter {name} failed: HTTP {response.status_code}: {response.text[:300]}")

    async def _lora_call(self, route: str, body: dict[str, str], name: str) -> httpx.Response:
        if not self.config.api_base:
            raise UpstreamError(f"model {self.config.name} has no api_base to manage LoRA adapter {name} on")
        url = self.config.api_base.rstrip("/") + "/" + route
        headers = {"Authorization": f"Bearer {self.config.api_key}"} if self.config.api_key else {}
        try:
            async with httpx.AsyncClient(timeout=self.config.timeout_s) as client:
                return await client.post(url, json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise UpstreamError(f"{route} for {name} failed: {exc}") from exc

    async def _reload_if_lost(self, request: GenerationRequest, exc: UpstreamError) -> bool:
        """After a 404 for an adapter this gateway loaded, the server lost it (vLLM restarted): load
        it again and say so, so the caller tries once more."""
        if exc.upstream_status != 404 or request.adapter not in self._adapters:
            return False
        log.warning("model %s: the server no longer knows adapter %s (restarted?); loading it again",
                    self.config.name, request.adapter)
        await self.load_adapter(request.adapter, self._adapters[request.adapter])
        return True

    async def _fan_out(self, request: GenerationRequest, count: int) -> tuple[list[Candidate], int, list[Exception]]:
        results = await asyncio.gather(*(self._call(request, 1) for _ in range(count)),
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
            candidates, prompt_tokens = await self._call(request, 1)
            return self._finish(candidates, prompt_tokens, 1, [])
        if not self._native_n:
            candidates, prompt_tokens, failures = await self._fan_out(request, n)
            return self._finish(candidates, prompt_tokens, n, failures)
        try:
            candidates, prompt_tokens = await self._call(request, n)
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
            errors = [as_upstream_error(f) for f in failures] or [UpstreamError("upstream returned no choices")]
            # All timed out: 504; otherwise the first non-timeout error decides.
            raise next((e for e in errors if not isinstance(e, UpstreamTimeout)), errors[0])
        return Generation(candidates=candidates, prompt_tokens=prompt_tokens, upstream_calls=calls,
                          failures=[str(f) for f in failures])
