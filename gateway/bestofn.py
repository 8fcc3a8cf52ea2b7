"""The engine: how many candidates, from which backend, scored how, who wins, and what is logged.

At best_of = 1 nothing waits for the scorer: the reply goes out and the single candidate is scored
afterwards, in the background, before its record is logged (so N=1 adds no scoring latency and
the logs still hold its reward). At best_of > 1 the candidates are scored together and the top n
are returned. A scorer that fails or times out degrades the reply to the first candidates in
generation order, flagged `tao.degraded`; the record is logged either way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal

import orjson

from gateway.backends import Backend, Candidate, Generation, GenerationRequest, StreamDelta
from gateway.config import ModelConfig, RewardConfig
from gateway.errors import APIError, UpstreamError, from_upstream
from gateway.metrics import Metrics
from gateway.protocol import ChatCompletionRequest, CompletionRequest, TaoInfo, Usage
from gateway.rewards import Scorer
from gateway.rollout import BASE_ARM, Route
from gateway.store import RequestLog, Store

log = logging.getLogger(__name__)

BEST_OF_HEADER = "x-tao-best-of"


@dataclass
class ServeRequest:
    """A parsed, authorised request bound to its model config, before any generation."""

    request_id: str
    endpoint: Literal["chat", "completion"]
    body: ChatCompletionRequest | CompletionRequest
    model: ModelConfig
    best_of: int
    arm: str = BASE_ARM
    adapter: str | None = None  # the rollout candidate's LoRA adapter, when on that arm
    model_version: str | None = None  # overrides the backend's label (a checkpoint id)
    shadow: Route | None = None  # also answer this request on the candidate arm, in the background
    created: float = field(default_factory=time.time)
    started: float = field(default_factory=time.perf_counter)

    @property
    def n(self) -> int:
        return self.body.n


@dataclass
class Outcome:
    """What the HTTP layer shapes into a reply: the returned candidates best first, and the facts."""

    choices: list[Candidate]
    usage: Usage
    tao: TaoInfo


def resolve_best_of(model: ModelConfig, body_best_of: int | None, header: str | None, n: int,
                    default: int | None = None) -> int:
    """N from the body, else the `X-TAO-Best-Of` header, else the default (the model's, or its
    rollout arm's); bounded by the model's max_best_of and at least n."""
    if body_best_of is not None:
        best_of, source = body_best_of, "best_of"
    elif header is not None:
        try:
            best_of, source = int(header), "X-TAO-Best-Of"
        except ValueError:
            raise APIError(400, f"header X-TAO-Best-Of must be an integer, got {header!r}",
                           param="best_of", code="invalid_best_of") from None
        if best_of < 1:
            raise APIError(400, "X-TAO-Best-Of must be at least 1", param="best_of", code="invalid_best_of")
    else:
        best_of, source = max(model.best_of if default is None else default, n), None
    if best_of > model.max_best_of:
        raise APIError(400, f"best_of {best_of} exceeds the maximum of {model.max_best_of} for model "
                       f"{model.name}", param="best_of", code="best_of_too_large")
    if best_of < n:
        raise APIError(400, f"{source} ({best_of}) must be greater than or equal to n ({n})",
                       param="best_of", code="invalid_best_of")
    return best_of


class Engine:
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

    # ---- building the upstream request -------------------------------------------------------
    @staticmethod
    def generation_request(req: ServeRequest, n: int) -> GenerationRequest:
        body, model = req.body, req.model
        max_tokens = body.max_tokens
        if isinstance(body, ChatCompletionRequest):
            max_tokens = max_tokens or body.max_completion_tokens
        params = {
            **body.passthrough(),
            "temperature": model.temperature if body.temperature is None else body.temperature,
            "top_p": model.top_p if body.top_p is None else body.top_p,
            "max_tokens": max_tokens or model.max_tokens,
        }
        if body.stop is not None:
            params["stop"] = body.stop_list()
        if body.seed is not None:
            params["seed"] = body.seed
        if body.user is not None:
            params["user"] = body.user
        if isinstance(body, ChatCompletionRequest):
            messages = [m.model_dump(exclude_none=True) for m in body.messages]
            return GenerationRequest(kind="chat", n=n, params=params, messages=messages, adapter=req.adapter)
        return GenerationRequest(kind="completion", n=n, params=params, prompt=body.prompt_text(),
                                 adapter=req.adapter)

    def version(self, req: ServeRequest) -> str:
        return req.model_version or self.backends[req.model.name].model_version

    # ---- non-streaming, and streaming at best_of > 1 -----------------------------------------
    async def _generate(self, req: ServeRequest, n: int) -> tuple[Generation, float]:
        """n candidates and the milliseconds they took; upstream failures become API errors (logged)."""
        started = time.perf_counter()
        try:
            generation = await self.backends[req.model.name].generate(self.generation_request(req, n))
        except UpstreamError as exc:
            self.metrics.upstream_failures.labels(req.model.name).inc()
            self.record_failure(req, exc.status, str(exc), model_version=self.version(req))
            raise from_upstream(exc) from exc
        if generation.failures:
            self.metrics.upstream_failures.labels(req.model.name).inc(len(generation.failures))
            log.warning("request %s: %d of %d candidates failed upstream; serving the best of the rest",
                        req.request_id, len(generation.failures), n)
        return generation, (time.perf_counter() - started) * 1000

    async def _score(self, req: ServeRequest, texts: list[str]) -> tuple[list[float | None], str | None, float]:
        """(scores, degraded reason, milliseconds); a failing scorer yields Nones and a reason."""
        started = time.perf_counter()
        try:
            scores = list(await asyncio.wait_for(self.scorer.score(req.body.prompt_text(), texts),
                                                 self.reward.timeout_s))
            return scores, None, (time.perf_counter() - started) * 1000
        except TimeoutError:
            reason = f"scorer timed out after {self.reward.timeout_s:g} s"
        except Exception as exc:  # noqa: BLE001 - any scorer failure degrades, never fails
            reason = f"scorer failed: {type(exc).__name__}: {exc}"
        return [None] * len(texts), reason, (time.perf_counter() - started) * 1000

    async def complete(self, req: ServeRequest) -> Outcome:
        adaptive = req.model.adaptive
        first = req.best_of
        if adaptive is not None and req.n <= adaptive.first < req.best_of:
            first = adaptive.first
        generation, upstream_ms = await self._generate(req, first)
        texts = [c.text for c in generation.candidates]
        scores: list[float | None] = [None] * len(texts)
        degraded_reason: str | None = None
        scoring_ms = 0.0
        if len(texts) > 1:
            scores, degraded_reason, scoring_ms = await self._score(req, texts)
        if first < req.best_of and degraded_reason is None and adaptive.uncertain(scores):
            # The first batch disagrees: spend the rest of the budget on this prompt.
            try:
                more, more_ms = await self._generate(req, req.best_of - first)
            except APIError as exc:
                more, more_ms = Generation(candidates=[], prompt_tokens=0, upstream_calls=0,
                                           failures=[exc.message]), 0.0
            more_scores, degraded_reason, more_scoring_ms = await self._score(req, [c.text for c in more.candidates])
            generation = Generation(candidates=generation.candidates + more.candidates,
                                    prompt_tokens=generation.prompt_tokens,
                                    upstream_calls=generation.upstream_calls + more.upstream_calls,
                                    failures=generation.failures + more.failures)
            texts = [c.text for c in generation.candidates]
            scores = scores + more_scores if degraded_reason is None else [None] * len(texts)
            upstream_ms += more_ms
            scoring_ms += more_scoring_ms

        if degraded_reason is None and scores[0] is not None:
            ranking = sorted(range(len(texts)), key=lambda i: (-scores[i], i))
        else:
            ranking = list(range(len(texts)))
        returned = ranking[: req.n]
        tao = TaoInfo(
            request_id=req.request_id, best_of=req.best_of, n=req.n, scores=scores,
            winner=returned[0], ranking=returned, model_version=self.version(req), arm=req.arm,
            degraded=degraded_reason is not None, degraded_reason=degraded_reason,
        )
        completion_tokens = sum(c.completion_tokens for c in generation.candidates)
        usage = Usage(prompt_tokens=generation.prompt_tokens, completion_tokens=completion_tokens,
                      total_tokens=generation.prompt_tokens + completion_tokens)
        outcome = Outcome(choices=[generation.candidates[i] for i in returned], usage=usage, tao=tao)

        if degraded_reason:
            self.metrics.degraded.labels(req.model.name, "scorer").inc()
            log.warning("request %s degraded: %s", req.request_id, degraded_reason)
        if len(texts) == 1:
            self._in_background(self._score_and_log(req, generation, tao, upstream_ms))
        else:
            self._finish(req, generation, tao, upstream_ms, scoring_ms)
        self.start_shadow(req)
        return outcome

    def start_shadow(self, req: ServeRequest) -> None:
        """Answer `req` on the candidate arm too, in the background: logged, never returned."""
        if req.shadow is None:
            return
        route = req.shadow
        shadow = ServeRequest(request_id=f"{req.request_id}-shadow", endpoint=req.endpoint,
                              body=req.body.model_copy(update={"stream": False}), model=req.model,
                              best_of=max(route.default_best_of, req.n), arm=route.arm, adapter=route.adapter,
                              model_version=route.model_version)
        self._in_background(self._shadow(shadow))

    async def _shadow(self, req: ServeRequest) -> None:
        try:
            await self.complete(req)
        except APIError:
            pass  # complete() already logged and counted the failure

    # ---- streaming at best_of = 1 -------------------------------------------------------------
    async def stream_single(self, req: ServeRequest, tao: TaoInfo) -> AsyncIterator[StreamDelta]:
        """Tokens straight from the upstream; the record is logged (and scored) when it ends."""
        backend = self.backends[req.model.name]
        upstream_started = time.perf_counter()
        parts: list[str] = []
        last = StreamDelta()
        status: tuple[int, str] | None = None
        try:
            async for delta in backend.stream(self.generation_request(req, 1)):
                parts.append(delta.text)
                if delta.finish_reason:
                    last.finish_reason = delta.finish_reason
                if delta.prompt_tokens is not None:
                    last.prompt_tokens = delta.prompt_tokens
                if delta.completion_tokens is not None:
                    last.completion_tokens = delta.completion_tokens
                yield delta
        except UpstreamError as exc:
            self.metrics.upstream_failures.labels(req.model.name).inc()
            status = (exc.status, str(exc))
            raise
        except BaseException:  # the client went away: log what was generated so far
            status = (499, "client disconnected during streaming")
            raise
        finally:
            upstream_ms = (time.perf_counter() - upstream_started) * 1000
            text = "".join(parts)
            candidate = Candidate(
                text=text, finish_reason=last.finish_reason, completion_tokens=last.completion_tokens or 0,
                message={"role": "assistant", "content": text} if req.endpoint == "chat" else None,
            )
            generation = Generation(candidates=[candidate], prompt_tokens=last.prompt_tokens or 0, upstream_calls=1)
            if status is None and text == "" and last.finish_reason is None:
                status = (502, "upstream stream ended without content")
            self._in_background(self._score_and_log(req, generation, tao, upstream_ms, failure=status))
            if status is None:
                self.start_shadow(req)

    # ---- logging and metrics --------------------------------------------------------------------
    def _in_background(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain(self) -> None:
        """Wait for background scoring/logging (called at shutdown, before the store flushes)."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    async def _score_and_log(self, req: ServeRequest, generation: Generation, tao: TaoInfo,
                             upstream_ms: float, failure: tuple[int, str] | None = None) -> None:
        scoring_ms = 0.0
        if failure is None:
            scores, reason, scoring_ms = await self._score(req, [c.text for c in generation.candidates])
            if reason is None:
                tao = tao.model_copy(update={"scores": scores})
            else:  # logged unscored; the reply already went out
                self.metrics.degraded.labels(req.model.name, "scorer").inc()
                tao = tao.model_copy(update={"degraded": True, "degraded_reason": reason})
        self._finish(req, generation, tao, upstream_ms, scoring_ms, failure=failure)

    def _finish(self, req: ServeRequest, generation: Generation, tao: TaoInfo, upstream_ms: float,
                scoring_ms: float, failure: tuple[int, str] | None = None) -> None:
        model = req.model.name
        latency_s = time.perf_counter() - req.started
        http_status = failure[0] if failure else 200
        self.metrics.requests.labels(model, str(http_status)).inc()
        self.metrics.request_latency.labels(model).observe(latency_s)
        self.metrics.upstream_latency.labels(model).observe(upstream_ms / 1000)
        self.metrics.candidates.labels(model).inc(len(generation.candidates))
        self.metrics.upstream_calls.labels(model).inc(generation.upstream_calls)
        if len(generation.candidates) > 1:
            self.metrics.scoring_latency.labels(model).observe(scoring_ms / 1000)
        if tao.scores and tao.scores[0] is not None:
            self.metrics.first_reward.labels(model).observe(tao.scores[0])
            self.metrics.winner_reward.labels(model).observe(tao.scores[tao.winner])

        status = "error" if failure else ("degraded" if tao.degraded else "ok")
        error = failure[1] if failure else tao.degraded_reason
        if generation.failures:
            error = "; ".join(filter(None, [error, f"{len(generation.failures)} candidates failed upstream: "
                                            f"{generation.failures[0]}"]))
        returned = {idx: rank for rank, idx in enumerate(tao.ranking)}
        completion_tokens = sum(c.completion_tokens for c in generation.candidates)
        row = self._request_row(req, tao.model_version, status, http_status, error)
        row.update(
            n_generated=len(generation.candidates),
            winner_index=tao.winner, latency_ms=latency_s * 1000, upstream_ms=upstream_ms,
            scoring_ms=scoring_ms, prompt_tokens=generation.prompt_tokens,
            completion_tokens=completion_tokens, upstream_calls=generation.upstream_calls,
        )
        candidates = [
            {
                "request_id": req.request_id, "idx": i, "text": c.text,
                "message": orjson.dumps(c.message).decode() if c.message else None,
                "finish_reason": c.finish_reason, "tokens": c.completion_tokens, "score": tao.scores[i],
                "won": int(i == tao.winner and not failure), "returned_rank": returned.get(i),
            }
            for i, c in enumerate(generation.candidates)
        ]
        self.store.log(RequestLog(request=row, candidates=candidates))
        self.metrics.store_queue_depth.set(self.store.queue_depth())

    def record_failure(self, req: ServeRequest, http_status: int, message: str, *, model_version: str = "") -> None:
        """Log a request that got no reply (upstream failure, client error after parsing)."""
        model = req.model.name
        self.metrics.requests.labels(model, str(http_status)).inc()
        self.metrics.request_latency.labels(model).observe(time.perf_counter() - req.started)
        row = self._request_row(req, model_version, "error", http_status, message)
        row["latency_ms"] = (time.perf_counter() - req.started) * 1000
        self.store.log(RequestLog(request=row))

    @staticmethod
    def _request_row(req: ServeRequest, model_version: str, status: str, http_status: int,
                     error: str | None) -> dict:
        body = req.body
        if isinstance(body, ChatCompletionRequest):
            messages = orjson.dumps([m.model_dump(exclude_none=True) for m in body.messages]).decode()
        else:
            messages = orjson.dumps(body.prompt_text()).decode()
        params = body.model_dump(exclude={"messages", "prompt", "model"}, exclude_none=True)
        return {
            "id": req.request_id, "created_at": req.created, "model": req.model.name, "arm": req.arm,
            "model_version": model_version, "endpoint": req.endpoint, "messages": messages,
            "prompt": body.prompt_text(), "params": orjson.dumps(params).decode(), "best_of": req.best_of,
            "n": req.n, "n_generated": None, "winner_index": None, "latency_ms": None, "upstream_ms": None, "scoring_ms": None,
            "prompt_tokens": None, "completion_tokens": None, "upstream_calls": None,
            "stream": int(body.stream), "user": body.user, "status": status, "http_status": http_status,
            "error": error,
        }
