"""Backends by name: one module per way to generate."""

from __future__ import annotations

from collections.abc import Callable

from gateway.backends.base import Backend, Candidate, Generation, GenerationRequest, StreamDelta
from gateway.config import ModelConfig


def build_backend(config: ModelConfig, on_retry: Callable[[], None] | None = None,
                  on_batch: Callable[[int], None] | None = None) -> Backend:
    """The backend a model's config asks for (imports are lazy: torch only when local is used).
    `on_retry` counts the upstream retries of a remote model; `on_batch` sees how many requests
    shared each generate call of a local one."""
    if config.backend == "litellm":  # the config's name for every remote model (LiteLLM or direct HTTP)
        if config.api_bases:  # servers we can name, probe and load adapters on: one or more replicas
            from gateway.backends.replicas import ReplicatedBackend

            return ReplicatedBackend(config, on_retry)
        from gateway.backends.upstream import UpstreamBackend

        return UpstreamBackend(config, on_retry)
    if config.backend == "local":
        from gateway.backends.local import LocalBackend

        return LocalBackend(config, on_batch)
    raise ValueError(f"unknown backend {config.backend!r}")


__all__ = ["Backend", "Candidate", "Generation", "GenerationRequest", "StreamDelta", "build_backend"]
