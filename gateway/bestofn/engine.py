"""`Engine`: the best-of-N steps for one bound request, the shadow answer beside it, and streaming
at best_of = 1 (the package docstring tells the whole story)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Coroutine
from typing import Any

from gateway.backends import Backend, StreamDelta
from gateway.bestofn.pool import CandidatePool, Failure, Outcome, StreamedReply
from gateway.bestofn.recording import Recorder
from gateway.bestofn.scoring import PoolScoring
from gateway.config import ModelConfig, RewardConfig
from gateway.contract import Contract
from gateway.errors import APIError, UpstreamError, from_upstream
from gateway.metrics import Metrics
from gateway.protocol import ChatCompletionRequest, CompletionRequest, TaoInfo
from gateway.request import Endpoint, ServeRequest, upstream_request
from gateway.rewards import Scorer
from gateway.rollout import Route
from gateway.store import Store

log = logging.getLogger(__name__)


class Engine:
    """Runs best-of-N for bound requests and logs every one, answered or not."""

    def __init__(
        self,
        backends: dict[str, Backend],
        scorer: Scorer,
        reward: RewardConfig,
        store: Store,
        metrics: Metrics,
    ) -> None:
        self.backends = backends
        self.store = store
        self.metrics = metrics
        self.scoring = PoolScoring(scorer, reward, metrics)
        self.recorder = Recorder(store, metrics)
        self._background: set[asyncio.Task] = set()

    def bind(self, request_id: str, endpoint: Endpoint, body: ChatCompletionRequest | CompletionRequest,
             model: ModelConfig, route: Route, best_of: int, caller: str, shadow: Route | None = None,
             contract: Contract | None = None) -> ServeRequest:
        """The request as the engine runs it (the upstream request and prompt text built once)."""
        upstream = upstream_request(body, model, route.adapter)
        return ServeRequest(
            request_id=request_id, endpoint=endpoint, body=body, model=model, best_of=best_of, route=route,
            model_version=route.model_version or self.backends[model.name].model_version, upstream=upstream,
            prompt=body.prompt_text(), caller=caller, shadow=shadow, contract=contract)

    # ---- best-of-N: infer candidates → select the best → record ---------------------------------
    async def complete(self, req: ServeRequest) -> Outcome:
        """The reply to a bound request; upstream failures raise APIError (already recorded)."""
        try:
            pool = await self.infer_candidates(req)
        except asyncio.CancelledError:  # the client left (or the server is stopping): log it, like N=1
            self.record(req, failure=Failure(499, "client disconnected before the reply was ready"))
            raise
        returned = await self.scoring.select(req, pool)
        tao = self._tao(req, pool, returned)
        if len(pool.candidates) == 1:  # nothing to choose between: score after replying
            self.recorder.provisional(req, pool, tao)
            self._in_background(self._score_then_record(req, pool, tao))
        else:
            self.record(req, pool=pool, tao=tao)
        self.start_shadow(req)
        return Outcome(choices=[pool.candidates[i] for i in returned], usage=pool.usage(), tao=tao)

    @staticmethod
    def _tao(req: ServeRequest, pool: CandidatePool, returned: list[int]) -> TaoInfo:
        reason = pool.degraded_because
        return TaoInfo(request_id=req.request_id, best_of=req.best_of, n=req.n, scores=pool.scores, winner=returned[0],
                       ranking=returned, model_version=req.model_version, arm=req.arm, degraded=reason is not None,
                       degraded_reason=reason, violations=pool.violations if req.contract is not None else None,
                       readings=pool.readings if req.body.tao_readings else None)

    @staticmethod
    async def _check(req: ServeRequest, pool: CandidatePool) -> None:
        """Check the candidates against the request's contract, off the loop (bounded per candidate)."""
        if req.contract is not None and pool.candidates:
            await asyncio.to_thread(pool.check, req.contract)

    def _count_contract(self, req: ServeRequest, pool: CandidatePool) -> None:
        """Count the candidates that broke the contract, and the reply where none held."""
        if req.contract is None:
            return
        broken = sum(not held for held in pool.held)
        if broken:
            self.metrics.contract_violations.labels(req.model.name).inc(broken)
        if pool.contract_failure is not None:
            self.metrics.degraded.labels(req.model.name, "contract").inc()
            log.warning("request %s degraded: %s", req.request_id, pool.contract_failure)

    async def infer_candidates(self, req: ServeRequest) -> CandidatePool:
        """Up to best_of candidates, scored when there is a choice. Under adaptive N a first batch
        is drawn, and the rest of the budget is spent only when its scores disagree."""
        adaptive = req.model.adaptive
        first = req.best_of
        if adaptive is not None and req.n <= adaptive.first < req.best_of:
            first = adaptive.first
        try:
            pool = await self._generate(req, first)
        except UpstreamError as exc:
            self.record(req, failure=Failure(exc.status, str(exc)))
            raise from_upstream(exc) from exc
        await self._check(req, pool)
        if len(pool.candidates) > 1:
            await self.scoring.score(req, pool)
        # Under adaptive N the rest of the budget is spent where the scores disagree, or where no
        # candidate of the first batch held the request's contract.
        if first < req.best_of and pool.degraded_reason is None and (adaptive.uncertain(pool.scores)
                                                                      or not any(pool.held)):
            try:
                more = await self._generate(req, req.best_of - first)
            except UpstreamError as exc:  # the first batch still stands
                more = CandidatePool(candidates=[], prompt_tokens=0, upstream_calls=0, upstream_ms=0.0,
                                     failures=[str(exc)])
            await self._check(req, more)
            pool.extend(more)
            await self.scoring.score(req, pool)
        self._count_contract(req, pool)
        return pool

    async def _generate(self, req: ServeRequest, n: int) -> CandidatePool:
        """n candidates (fewer on partial failure, counted); raises UpstreamError when none came."""
        started = time.perf_counter()
        try:
            generation = await self.backends[req.model.name].generate(req.call(n))
        except UpstreamError as exc:
            self.metrics.upstream_failures.labels(req.model.name).inc()
            log.warning("request %s: upstream failed: %s", req.request_id, exc)
            raise
        if generation.failures:
            self.metrics.upstream_failures.labels(req.model.name).inc(len(generation.failures))
            log.warning("request %s: %d of %d candidates failed upstream; serving the best of the rest",
                        req.request_id, len(generation.failures), n)
        return CandidatePool.of(generation, (time.perf_counter() - started) * 1000)

    async def _score_then_record(self, req: ServeRequest, pool: CandidatePool, tao: TaoInfo,
                                 failure: Failure | None = None, streamed: bool = False) -> None:
        """A single candidate, already sent: score it (and check a streamed one against the contract)
        unless the reply failed, then record it."""
        if failure is None:
            await self.scoring.score(req, pool)
            if streamed:  # checked only now that the whole answer is here
                await self._check(req, pool)
                self._count_contract(req, pool)
            tao = self._tao(req, pool, tao.ranking)
        self.record(req, pool=pool, tao=tao, failure=failure)

    # ---- shadow: the rollout candidate answers an incumbent request too ---------------------------
    def start_shadow(self, req: ServeRequest) -> None:
        """Answer `req` on the candidate arm too, in the background: logged, never returned."""
        if req.shadow is not None:
            self._in_background(self._shadow(req.on_shadow_arm()))

    async def _shadow(self, req: ServeRequest) -> None:
        try:
            await self.complete(req)
        except APIError:
            pass  # complete() already logged and counted the failure

    # ---- streaming at best_of = 1 -----------------------------------------------------------------
    def stream_single(self, req: ServeRequest) -> tuple[StreamedReply, AsyncGenerator[StreamDelta, None]]:
        """Tokens straight from the upstream, and the reply they add up to; when the stream ends
        (or fails, or the client leaves) the candidate is scored and logged in the background."""
        reply = StreamedReply(tao=TaoInfo(request_id=req.request_id, best_of=1, n=1, scores=[None], winner=0,
                                          ranking=[0], model_version=req.model_version, arm=req.arm))
        return reply, self._stream(req, reply)

    async def _stream(self, req: ServeRequest, reply: StreamedReply) -> AsyncGenerator[StreamDelta, None]:
        started = time.perf_counter()
        failure: Failure | None = None
        try:
            async for delta in self.backends[req.model.name].stream(req.call(1)):
                reply.add(delta)
                yield delta
        except UpstreamError as exc:
            self.metrics.upstream_failures.labels(req.model.name).inc()
            failure = Failure(exc.status, str(exc))
            raise
        except BaseException:  # the client went away: log what was generated so far
            failure = Failure(499, "client disconnected during streaming")
            raise
        finally:
            pool = reply.pool(req.endpoint, (time.perf_counter() - started) * 1000)
            if failure is None and not pool.candidates[0].text and reply.finish_reason is None:
                failure = Failure(502, "upstream stream ended without content")
            self.recorder.provisional(req, pool, reply.tao, failure)
            self._in_background(self._score_then_record(req, pool, reply.tao, failure, streamed=True))
            if failure is None:
                self.start_shadow(req)

    def record(self, req: ServeRequest, *, pool: CandidatePool | None = None, tao: TaoInfo | None = None,
               failure: Failure | None = None) -> None:
        """Count and log one request, answered or not (see `Recorder.record`)."""
        self.recorder.record(req, pool=pool, tao=tao, failure=failure)

    # ---- background work --------------------------------------------------------------------------
    def _in_background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain(self) -> None:
        """Wait for background scoring/logging (called at shutdown, before the store flushes)."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)
