"""One public model over one or more servers of the same weights: vLLM replicas behind one name.

Every model with an `api_base` is served through here, one `UpstreamBackend` per server, so that a
single vLLM down at start is named in /healthz the same way one replica of several is.

- **Routing.** A call goes to the replica with the fewest calls outstanding from this gateway (ties
  in turn). Best-of-N asks for all N in one call, so a request stays on one replica.
- **Failure.** A retryable failure (connection refused, 429, 5xx) takes the replica out and the call
  is made again on another one at once; with none left it waits as `UpstreamBackend` would
  (`num_retries` bounds the attempts either way, and each is counted as a retry). A replica that is
  out gets no traffic while another is in; if all are out, the one out longest is tried anyway, so a
  client gets the server's real error rather than a refusal from us.
- **Coming back.** Every `replica_cooldown_s` the replicas that are out are probed (`GET
  {api_base}/models`; any HTTP answer below 500 means the server runs). One that answers gets this
  gateway's adapters loaded again before it takes traffic: vLLM keeps runtime adapters per process,
  and a restarted server has none.
- **Adapters.** A rollout's adapter is loaded on every replica. A replica that refuses it (rank, base)
  fails the load with the server's reason; one that cannot be reached is out, and gets the adapter
  when it comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx

from gateway.backends.base import Generation, GenerationRequest, StreamDelta
from gateway.backends.upstream import MAX_RETRY_DELAY_S, RETRY_DELAY_S, UpstreamBackend
from gateway.config import ModelConfig, with_updates
from gateway.errors import UpstreamError, as_upstream_error, client_safe

T = TypeVar("T")

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 2.0


@dataclass
class ReplicaHealth:
    """What /healthz says about one server of a model. /healthz answers without a key, so a server is
    named by its place in the model's `api_base` list, and its error without addresses (the server log
    has both in full)."""

    api_base_index: int
    up: bool
    outstanding: int
    calls: int  # sent to it by this gateway since start, failed ones included
    last_error: str | None


@dataclass(eq=False)
class Replica:
    api_base: str
    backend: UpstreamBackend
    outstanding: int = 0
    routed: int = 0  # calls sent here: breaks ties so idle replicas take turns
    out_since: float | None = None  # monotonic time it was taken out; None while in
    last_error: str | None = None
    adapters: dict[str, str] = field(default_factory=dict)  # name -> path it should hold

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        self.outstanding += 1
        self.routed += 1
        try:
            yield
        finally:
            self.outstanding -= 1

    def health(self, index: int) -> ReplicaHealth:
        return ReplicaHealth(index, self.out_since is None, self.outstanding, self.routed,
                             client_safe(self.last_error) if self.last_error else None)


class ReplicatedBackend:
    """A model's servers (`api_base`, one URL or a list) as one backend; see the module docstring."""

    def __init__(self, config: ModelConfig, on_retry: Callable[[], None] | None = None) -> None:
        self.config = config
        self.model_version = config.version or config.model
        self._on_retry = on_retry or (lambda: None)
        # each replica makes one attempt per call: retries are made here, where another replica can take them
        self.replicas = [Replica(base, UpstreamBackend(with_updates(config, api_base=base, num_retries=0), on_retry))
                         for base in config.api_bases]
        self._prober: asyncio.Task | None = None

    async def start(self) -> None:
        await asyncio.gather(*(r.backend.start() for r in self.replicas))
        await asyncio.gather(*(self._probe(r) for r in self.replicas))
        self._prober = asyncio.create_task(self._probe_loop(), name=f"replicas-{self.config.name}")

    async def close(self) -> None:
        if self._prober is not None:
            self._prober.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prober
        await asyncio.gather(*(r.backend.close() for r in self.replicas), return_exceptions=True)

    def health(self) -> list[ReplicaHealth]:
        return [r.health(i) for i, r in enumerate(self.replicas)]

    # ---- routing -----------------------------------------------------------------------------------
    def _pick(self, tried: set[Replica]) -> Replica:
        """The replica in service, not yet tried for this call, with the fewest calls outstanding; with
        none such, the one out longest (an answer from a server beats a refusal from us)."""
        fresh = [r for r in self.replicas if r not in tried] or self.replicas
        serving = [r for r in fresh if r.out_since is None]
        if serving:
            return min(serving, key=lambda r: (r.outstanding, r.routed))
        return min(fresh, key=lambda r: r.out_since or 0.0)

    def _take_out(self, replica: Replica, exc: UpstreamError) -> None:
        replica.last_error = str(exc)[:300]
        if replica.out_since is None:
            replica.out_since = time.monotonic()
            log.warning("model %s: replica %s is out of service (%s); probing it every %g s", self.config.name,
                        replica.api_base, replica.last_error, self.config.replica_cooldown_s)

    def _attempts(self) -> Iterator[tuple[Replica, float, bool]]:
        """(replica, seconds to wait first, last attempt) for each try of one call: a fresh replica at
        once; the same ones again after a backoff once every replica has failed it or is out."""
        tried: set[Replica] = set()
        delay = RETRY_DELAY_S
        for attempt in range(self.config.num_retries + 1):
            wait = 0.0
            if attempt:
                self._on_retry()
                if len(tried) == len(self.replicas) or all(r.out_since is not None for r in self.replicas):
                    wait, delay = delay, min(delay * 2, MAX_RETRY_DELAY_S)
            replica = self._pick(tried)
            tried.add(replica)
            yield replica, wait, attempt == self.config.num_retries

    async def generate(self, request: GenerationRequest) -> Generation:
        return await self._routed(lambda backend: backend.generate(request))

    async def embed(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._routed(lambda backend: backend.embed(body))

    async def _routed(self, work: Callable[[UpstreamBackend], Awaitable[T]]) -> T:
        """`work` on a replica: another one at once when it fails in a way worth retrying."""
        for replica, wait, last in self._attempts():
            await asyncio.sleep(wait)
            try:
                with replica.busy():
                    return await work(replica.backend)
            except UpstreamError as exc:
                if not exc.retryable:
                    raise
                self._take_out(replica, exc)
                if last:
                    raise
        raise AssertionError("unreachable")

    async def stream(self, request: GenerationRequest) -> AsyncIterator[StreamDelta]:
        """One replica's stream; one that fails before its first chunk is replaced by another's."""
        for replica, wait, last in self._attempts():
            await asyncio.sleep(wait)
            started = False
            try:
                with replica.busy():
                    async for delta in replica.backend.stream(request):
                        started = True
                        yield delta
                return
            except UpstreamError as exc:
                if not exc.retryable:
                    raise
                self._take_out(replica, exc)
                if started or last:
                    raise

    # ---- adapters ----------------------------------------------------------------------------------
    async def load_adapter(self, name: str, path: str) -> None:
        """Load on every replica at once. A refusal from any server fails the load (and it is freed on
        the others); one that cannot be reached is taken out and gets the adapter when it is back.
        With no replica reachable the load fails: nothing could serve the adapter."""
        results = await asyncio.gather(*(r.backend.load_adapter(name, path) for r in self.replicas),
                                       return_exceptions=True)
        loaded, refused, unreachable = [], [], []
        for replica, result in zip(self.replicas, results):
            if not isinstance(result, BaseException):
                loaded.append(replica)
            elif isinstance(result, UpstreamError) and result.upstream_status is not None:
                refused.append(result)  # the server answered: the adapter is at fault, not the replica
            else:
                unreachable.append((replica, as_upstream_error(result)))
        if refused or not loaded:
            await asyncio.gather(*(r.backend.unload_adapter(name) for r in loaded), return_exceptions=True)
            raise (refused or [error for _, error in unreachable])[0]
        for replica in self.replicas:
            replica.adapters[name] = path
        for replica, error in unreachable:
            self._take_out(replica, error)

    async def unload_adapter(self, name: str) -> None:
        """Free it wherever it is; an unreachable replica lost it anyway, or will load nothing it no longer holds."""
        for replica in self.replicas:
            replica.adapters.pop(name, None)
        results = await asyncio.gather(*(r.backend.unload_adapter(name) for r in self.replicas if r.out_since is None),
                                       return_exceptions=True)
        errors = [e for e in results if isinstance(e, BaseException)]
        if errors:
            raise errors[0]

    # ---- probing -----------------------------------------------------------------------------------
    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.replica_cooldown_s)
            out = [r for r in self.replicas if r.out_since is not None]
            await asyncio.gather(*(self._probe(r) for r in out))

    async def _probe(self, replica: Replica) -> None:
        """Put the replica in service if its server answers and takes back our adapters; out if not."""
        headers = {"Authorization": f"Bearer {self.config.api_key}"} if self.config.api_key else {}
        try:
            async with httpx.AsyncClient(timeout=PROBE_TIMEOUT_S) as client:
                answer = await client.get(replica.api_base.rstrip("/") + "/models", headers=headers)
            if answer.status_code >= 500:
                raise UpstreamError(f"{replica.api_base}/models answered HTTP {answer.status_code}")
            for name, path in list(replica.adapters.items()):
                await replica.backend.load_adapter(name, path)
        except (httpx.HTTPError, UpstreamError) as exc:
            error = exc if isinstance(exc, UpstreamError) else UpstreamError(f"not reachable: {exc!r}")
            self._take_out(replica, error)
            return
        if replica.out_since is not None:
            log.info("model %s: replica %s is back in service (%d adapter(s) loaded)", self.config.name,
                     replica.api_base, len(replica.adapters))
            replica.out_since = None
