"""The engine: how many candidates, from which backend, scored how, who wins, and what is logged.

Best-of-N reads as three steps (`Engine.complete`): `infer_candidates` (generate, score; under
adaptive N a second batch only where the first disagrees) → `select_best_candidates` (the top n
by reward) → `record` (metrics and the log). At best_of = 1 nothing waits for the scorer: the
reply goes out and the single candidate is scored afterwards, in the background, before its
record is logged (so N=1 adds no scoring latency and the logs still hold its reward). A scorer
that fails or times out degrades the reply to the first candidates in generation order, flagged
`tao.degraded`; the record is logged either way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Coroutine
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from gateway.backends import Backend, Candidate, Generation, StreamDelta
from gateway.config import ModelConfig, RewardConfig
from gateway.errors import APIError, UpstreamError, from_upstream
from gateway.metrics import Metrics
from gateway.protocol import ChatCompletionRequest, CompletionRequest, TaoInfo, Usage
from gateway.request import Endpoint, ServeRequest, upstream_request
from gateway.rewards import Scorer
from gateway.rewards.consensus import MAX_CHARS as MAX_CONSENSUS_CHARS
from gateway.rewards.consensus import consensus
from gateway.rollout import Route
from gateway.store import RequestLog, RequestStatus, Store

log = logging.getLogger(__name__)


@dataclass
class CandidatePool:
    """One request's candidates in generation order, their rewards, and what producing them cost."""

    candidates: list[Candidate]
    prompt_tokens: int
    upstream_calls: int
    upstream_ms: float
    failures: list[str] = field(default_factory=list)  # candidates lost to partial upstream failures
    scores: list[float | None] = field(default_factory=list)  # all floats, or all None (unscored)
    scoring_ms: float = 0.0
    degraded_reason: str | None = None  # why the scores are missing, when the scorer failed

    @classmethod
    def of(cls, generation: Generation, upstream_ms: float) -> CandidatePool:
        return cls(candidates=generation.candidates, prompt_tokens=generation.prompt_tokens,
                   upstream_calls=generation.upstream_calls, upstream_ms=upstream_ms,
                   failures=generation.failures, scores=[None] * len(generation.candidates))

    def extend(self, more: CandidatePool) -> None:
        """Add a later batch of the same prompt (the prompt was counted with the first)."""
        self.candidates += more.candidates
        self.scores += more.scores
        self.upstream_calls += more.upstream_calls
        self.upstream_ms += more.upstream_ms
        self.failures += more.failures

    @property
    def scored(self) -> bool:
        return bool(self.scores) and None not in self.scores

    def usage(self) -> Usage:
        completion_tokens = sum(c.completion_tokens for c in self.candidates)
        return Usage(prompt_tokens=self.prompt_tokens, completion_tokens=completion_tokens,
                     total_tokens=self.prompt_tokens + completion_tokens)


def select_best_candidates(scores: list[float | None], n: int, texts: list[str] | None = None,
                           tie_margin: float = 0.0) -> list[int]:
    """Indexes of the n candidates to return, best first: by reward (ties keep generation order),
    or the first n in generation order when the candidates are unscored.

    With `texts` and a `tie_margin`, the candidates within `tie_margin` of the best reward (the
    ones the reward cannot tell apart, e.g. on a prompt with nothing to verify) are ordered by
    consensus instead: the one most similar to all the others first (`rewards.consensus`). The
    rewards themselves are not changed, so they stay comparable with N=1 replies.
    """
    order = range(len(scores))
    if None in scores:
        return list(order)[:n]
    ranked = sorted(order, key=lambda i: (-scores[i], i))
    if texts is None or tie_margin <= 0 or len(ranked) < 2:
        return ranked[:n]
    best = scores[ranked[0]]
    near = [i for i in ranked if scores[i] >= best - tie_margin]
    if len(near) < 2 or sum(map(len, texts)) > MAX_CONSENSUS_CHARS:
        return ranked[:n]
    agreement = consensus(texts)
    near.sort(key=lambda i: (-agreement[i], i))
    return (near + [i for i in ranked if i not in near])[:n]


@dataclass
class Outcome:
    """What the HTTP layer shapes into a reply: the returned candidates best first, and the facts."""

    choices: list[Candidate]
    usage: Usage
    tao: TaoInfo


class Failure(NamedTuple):
    """Why a request got no (complete) reply: the HTTP status and the logged message."""

    status: int
    message: str


@dataclass
class StreamedReply:
    """An N=1 reply while it streams: the `tao` object the client gets, and what has arrived."""

    tao: TaoInfo
    parts: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, delta: StreamDelta) -> None:
        self.parts.append(delta.text)
        self.finish_reason = delta.finish_reason or self.finish_reason
        if delta.prompt_tokens is not None:
            self.prompt_tokens = delta.prompt_tokens
        if delta.completion_tokens is not None:
            self.completion_tokens = delta.completion_tokens

    def usage(self) -> Usage:
        return Usage(prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens,
                     total_tokens=self.prompt_tokens + self.completion_tokens)

    def pool(self, endpoint: Endpoint, upstream_ms: float) -> CandidatePool:
        text = "".join(self.parts)
        candidate = Candidate(text=text, finish_reason=self.finish_reason, completion_tokens=self.completion_tokens,
                              message={"role": "assistant", "content": text} if endpoint == "chat" else None)
        return CandidatePool(candidates=[candidate], prompt_tokens=self.prompt_tokens, upstream_calls=1,
                             upstream_ms=upstream_ms, scores=[None])


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
        self.scorer = scorer
        self.reward = reward
        self.store = store
        self.metrics = metrics
        self._background: set[asyncio.Task] = set()

    def bind(self, request_id: str, endpoint: Endpoint, body: ChatCompletionRequest | CompletionRequest,
             model: ModelConfig, route: Route, best_of: int, caller: str, shadow: Route | None = None) -> ServeRequest:
        """The request as the engine runs it (the upstream request and prompt text built once)."""
        upstream = upstream_request(body, model, route.adapter)
        return ServeRequest(
            request_id=request_id, endpoint=endpoint, body=body, model=model, best_of=best_of, route=route,
            model_version=route.model_version or self.backends[model.name].model_version, upstream=upstream,
            prompt=body.prompt_text(), caller=caller, shadow=shadow)

    # ---- best-of-N: infer candidates → select the best → record ---------------------------------
    async def complete(self, req: ServeRequest) -> Outcome:
        """The reply to a bound request; upstream failures raise APIError (already recorded)."""
        try:
            pool = await self.infer_candidates(req)
        except asyncio.CancelledError:  # the client left (or the server is stopping): log it, like N=1
            self.record(req, failure=Failure(499, "client disconnected before the reply was ready"))
            raise
        returned = await self._select(req, pool)
        tao = TaoInfo(
            request_id=req.request_id, best_of=req.best_of, n=req.n, scores=pool.scores, winner=returned[0],
            ranking=returned, model_version=req.model_version, arm=req.arm,
            degraded=pool.degraded_reason is not None, degraded_reason=pool.degraded_reason,
        )
        if len(pool.candidates) == 1:  # nothing to choose between: score after replying
            self._in_background(self._score_then_record(req, pool, tao))
        else:
            self.record(req, pool=pool, tao=tao)
        self.start_shadow(req)
        return Outcome(choices=[pool.candidates[i] for i in returned], usage=pool.usage(), tao=tao)

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
        if len(pool.candidates) > 1:
            await self._score(req, pool)
        if first < req.best_of and pool.degraded_reason is None and adaptive.uncertain(pool.scores):
            try:
                more = await self._generate(req, req.best_of - first)
            except UpstreamError as exc:  # the first batch still stands
                more = CandidatePool(candidates=[], prompt_tokens=0, upstream_calls=0, upstream_ms=0.0,
                                     failures=[str(exc)])
            pool.extend(more)
            await self._score(req, pool)
        return pool

    async def _select(self, req: ServeRequest, pool: CandidatePool) -> list[int]:
        """The candidates to return, best first: by reward; where the prompt states nothing the scorer
        can verify, near-ties of the reward (`reward.tie_margin`) are ordered by consensus."""
        if self.reward.tie_margin > 0 and pool.scored and len(pool.candidates) > 1 \
                and not await self._states_something_verifiable(req.prompt):
            return select_best_candidates(pool.scores, req.n, [c.text for c in pool.candidates], self.reward.tie_margin)
        return select_best_candidates(pool.scores, req.n)

    async def _states_something_verifiable(self, prompt: str) -> bool:
        """The scorer's answer within its time budget; True (rank by reward alone) when it has none."""
        try:
            return await asyncio.wait_for(self.scorer.states_something_verifiable(prompt), self.reward.timeout_s)
        except Exception as exc:  # noqa: BLE001 - a timeout or a failure only skips the tie-break
            log.warning("the scorer could not say whether the prompt states anything verifiable: %s",
                        type(exc).__name__)
            return True

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

    async def _score(self, req: ServeRequest, pool: CandidatePool) -> None:
        """Score the pool's unscored candidates; a failing scorer leaves all unscored and says why."""
        todo = [i for i, s in enumerate(pool.scores) if s is None]
        if not todo or pool.degraded_reason is not None:
            return
        started = time.perf_counter()
        try:
            scores = await asyncio.wait_for(self.scorer.score(req.prompt, [pool.candidates[i].text for i in todo]),
                                            self.reward.timeout_s)
            for i, score in zip(todo, scores, strict=True):
                pool.scores[i] = score
        except TimeoutError:
            pool.degraded_reason = f"scorer timed out after {self.reward.timeout_s:g} s"
        except Exception as exc:  # noqa: BLE001 - any scorer failure degrades, never fails
            pool.degraded_reason = f"scorer failed: {type(exc).__name__}: {exc}"
        pool.scoring_ms += (time.perf_counter() - started) * 1000
        if pool.degraded_reason is not None:
            pool.scores = [None] * len(pool.candidates)
            self.metrics.degraded.labels(req.model.name, "scorer").inc()
            log.warning("request %s degraded: %s", req.request_id, pool.degraded_reason)

    async def _score_then_record(self, req: ServeRequest, pool: CandidatePool, tao: TaoInfo,
                                 failure: Failure | None = None) -> None:
        """A single candidate, already sent: score it (unless the reply failed), then record it."""
        if failure is None:
            await self._score(req, pool)
            tao = tao.model_copy(update={"scores": pool.scores, "degraded": pool.degraded_reason is not None,
                                         "degraded_reason": pool.degraded_reason})
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
            self._in_background(self._score_then_record(req, pool, reply.tao, failure))
            if failure is None:
                self.start_shadow(req)

    # ---- the record: metrics and the log, once per request ----------------------------------------
    def record(self, req: ServeRequest, *, pool: CandidatePool | None = None, tao: TaoInfo | None = None,
               failure: Failure | None = None) -> None:
        """Count and log one request: answered (a pool and its tao), or not (a failure, with what
        was generated before it, if anything)."""
        model = req.model.name
        latency_s = time.perf_counter() - req.started
        http_status = failure.status if failure else 200
        self.metrics.requests.labels(model, str(http_status)).inc()
        self.metrics.request_latency.labels(model).observe(latency_s)
        if pool is not None and tao is not None:
            self._observe(model, pool, tao.winner)
        if req.model.log_requests:
            self.store.log(self._request_log(req, pool, tao, failure, http_status, latency_s))

    def _request_log(self, req: ServeRequest, pool: CandidatePool | None, tao: TaoInfo | None,
                     failure: Failure | None, http_status: int, latency_s: float) -> RequestLog:
        status = (RequestStatus.ERROR if failure else RequestStatus.DEGRADED if tao and tao.degraded
                  else RequestStatus.OK)
        error = failure.message if failure else tao.degraded_reason if tao else None
        row = self._request_row(req, status, http_status, latency_s)
        candidates: list[dict[str, Any]] = []
        if pool is not None and tao is not None:
            if pool.failures:
                error = "; ".join(filter(None, [error, f"{len(pool.failures)} candidates failed upstream: "
                                                f"{pool.failures[0]}"]))
            usage = pool.usage()
            row.update(n_generated=len(pool.candidates), winner_index=tao.winner, upstream_ms=pool.upstream_ms,
                       scoring_ms=pool.scoring_ms, prompt_tokens=usage.prompt_tokens,
                       completion_tokens=usage.completion_tokens, upstream_calls=pool.upstream_calls)
            returned = {idx: rank for rank, idx in enumerate(tao.ranking)}
            candidates = [
                {"request_id": req.request_id, "idx": i, "text": c.text,
                 "message": _message_beyond_text(c),
                 "finish_reason": c.finish_reason, "tokens": c.completion_tokens, "score": tao.scores[i],
                 "won": int(i == tao.winner and not failure), "returned_rank": returned.get(i)}
                for i, c in enumerate(pool.candidates)
            ]
        row["error"] = error
        return RequestLog(request=row, candidates=candidates)

    def _observe(self, model: str, pool: CandidatePool, winner: int | None) -> None:
        self.metrics.upstream_latency.labels(model).observe(pool.upstream_ms / 1000)
        self.metrics.candidates.labels(model).inc(len(pool.candidates))
        self.metrics.upstream_calls.labels(model).inc(pool.upstream_calls)
        if len(pool.candidates) > 1:
            self.metrics.scoring_latency.labels(model).observe(pool.scoring_ms / 1000)
        if pool.scored and winner is not None:
            self.metrics.first_reward.labels(model).observe(pool.scores[0])
            self.metrics.winner_reward.labels(model).observe(pool.scores[winner])

    @staticmethod
    def _request_row(req: ServeRequest, status: RequestStatus, http_status: int, latency_s: float) -> dict[str, Any]:
        upstream = req.upstream
        return {
            "id": req.request_id, "created_at": req.created, "model": req.model.name, "arm": req.arm,
            "model_version": req.model_version, "endpoint": req.endpoint,
            "messages": orjson.dumps(upstream.messages if upstream.kind == "chat" else upstream.prompt).decode(),
            "prompt": req.prompt, "params": orjson.dumps(upstream.params).decode(), "best_of": req.best_of,
            "n": req.n, "n_generated": None, "winner_index": None, "latency_ms": latency_s * 1000,
            "upstream_ms": None, "scoring_ms": None, "prompt_tokens": None, "completion_tokens": None,
            "upstream_calls": None, "stream": int(req.body.stream), "user": req.body.user, "caller": req.caller, "status": status,
            "http_status": http_status, "error": None,
        }

    # ---- background work --------------------------------------------------------------------------
    def _in_background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain(self) -> None:
        """Wait for background scoring/logging (called at shutdown, before the store flushes)."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)


def _message_beyond_text(candidate: Candidate) -> str | None:
    """The chat message as JSON when it says more than its text (tool calls, refusals), else None:
    the text is stored once, in `candidates.text`."""
    message = candidate.message
    if not message or (message.keys() <= {"role", "content"} and message.get("content") == candidate.text):
        return None
    return orjson.dumps(message).decode()
