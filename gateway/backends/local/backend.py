"""The local model behind the `Backend` protocol.

Generation runs on one worker thread, off the event loop: the server keeps answering health checks
and metrics while the CPU works, and requests queue for the model instead of thrashing it. All N
candidates of a request come from one generate call, so the prompt is encoded once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from gateway.backends.base import Generation, GenerationRequest, StreamDelta
from gateway.backends.local.batching import GenerationQueue
from gateway.backends.local.model import LocalModel, default_version
from gateway.backends.local.streaming import stream_answer
from gateway.config import ModelConfig
from gateway.errors import UpstreamError

T = TypeVar("T")


class LocalBackend:
    def __init__(self, config: ModelConfig, on_batch: Callable[[int], None] | None = None) -> None:
        self.config = config
        self.model_version = config.version or default_version(config)
        self.model = LocalModel(config)
        # the one thread that touches the model: loads, adapter changes and generate calls take turns on it
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"generate-{config.name}")
        self.queue = GenerationQueue(self.model, self.worker, config.max_batch_sequences, on_batch)

    async def _on_worker(self, function: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.worker, function, *args)

    def _require_loaded(self) -> None:
        if not self.model.loaded:
            raise UpstreamError(f"model {self.config.name} is not loaded")

    async def start(self) -> None:
        await self._on_worker(self.model.load)

    async def close(self) -> None:
        self.worker.shutdown(wait=True, cancel_futures=True)
        self.queue.fail_waiting()  # their drains were cancelled with the worker

    async def load_adapter(self, name: str, path: str) -> None:
        """Make a LoRA adapter servable by name, as its own merged copy of the weights (model.py says why)."""
        self._require_loaded()
        await self._on_worker(self.model.load_adapter, name, path)

    async def unload_adapter(self, name: str) -> None:
        if self.model.loaded:
            await self._on_worker(self.model.unload_adapter, name)

    async def generate(self, request: GenerationRequest) -> Generation:
        self._require_loaded()
        self.model.refuse_if_too_long_to_read(request)
        return await self.queue.generate(request)

    async def generate_batch(self, requests: list[GenerationRequest], seed: int | None = None) -> list[Generation]:
        """One generate call for several requests with the same adapter and sampling settings (the
        distill sampler's way to use the CPU fully); `seed` seeds the call (the requests' own are not read)."""
        self._require_loaded()
        if len({self.model.call_settings(r) for r in requests}) != 1:
            raise ValueError("generate_batch needs requests with one adapter and one set of sampling settings")
        return await self._on_worker(self.model.generate, requests, seed)

    async def embed(self, body: dict[str, Any]) -> dict[str, Any]:
        raise UpstreamError(f"model {self.config.name} is served by the local backend, which has no embeddings; "
                            "serve an embedding model with vLLM (or a provider) and name it in the config",
                            status=404, code="embeddings_not_supported")

    def stream(self, request: GenerationRequest) -> AsyncIterator[StreamDelta]:
        return stream_answer(self.model, self.worker, request)
