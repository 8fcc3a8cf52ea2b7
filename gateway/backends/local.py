"""transformers on this machine: the embedded SmolLM2 by default, any causal LM directory otherwise.

All N candidates of a request come from one `generate` call, so the prompt is encoded once.
Generation runs on one worker thread, off the event loop: the server keeps answering health checks
and metrics while the CPU works, and requests queue for the model instead of thrashing it. Requests
that queue while the model works share its next call when they can (same adapter and sampling
settings, no seed): on this CPU one call of 4 prompts × 8 samples yields 1.8× the tokens per second
of four calls of 8, so a busy gateway serves more, and no timer holds a request back to wait for
company (bench/local_batching.py). A request with a seed runs alone, so its answer repeats.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.backends.base import Candidate, Generation, GenerationRequest, StreamDelta
from gateway.config import EMBEDDED_MODEL, ModelConfig
from gateway.errors import UpstreamError
from gateway.hardware import resolve_dtype

log = logging.getLogger(__name__)

# Loading a model is not thread-safe in transformers: its first lazy import of a class, and then
# from_pretrained, which sets process-wide state while it builds the model (torch's default dtype, the
# meta-device init context). Two local models loading at once (each on its own worker thread) failed with
# "ImportError: cannot import name 'AutoModelForCausalLM'", then with a model of mixed float32 and bfloat16
# weights. Loads take turns.
_LOADING = threading.Lock()


def _generation_failed(exc: Exception) -> UpstreamError:
    """A local generation's failure, as the upstream's failure it is to the engine (502)."""
    error = UpstreamError(f"local generation failed: {type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error


def answer_length(sequence: list[int], tokenizer: Any) -> int | None:
    """Tokens before the first end-of-turn (eos or pad) token; None if the answer never ended."""
    ends = {tokenizer.eos_token_id, tokenizer.pad_token_id}
    return next((i for i, token in enumerate(sequence) if token in ends), None)


def _truncate_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


@dataclass
class _Queued:
    """A request waiting for the model, and where its answer goes."""

    request: GenerationRequest
    future: asyncio.Future[Generation]
    loop: asyncio.AbstractEventLoop
    prompt_ids: list[int] | None = None  # the encoded prompt, once the worker has checked it fits

    def settle(self, outcome: Generation | BaseException) -> None:
        def deliver() -> None:
            if self.future.done():  # the caller went away
                return
            if isinstance(outcome, BaseException):
                self.future.set_exception(outcome)
            else:
                self.future.set_result(outcome)

        self.loop.call_soon_threadsafe(deliver)


class LocalBackend:
    DEFAULT_ADAPTER = "configured"

    def __init__(self, config: ModelConfig, on_batch: Callable[[int], None] | None = None) -> None:
        self.config = config
        self._on_batch = on_batch
        self._default_adapter: str | None = None
        self.model_version = config.version or self._default_version()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"generate-{config.name}")
        self._model: Any = None
        self._tokenizer: Any = None
        self._queued: list[_Queued] = []
        self._queue_lock = threading.Lock()

    def _default_version(self) -> str:
        base = "smollm2-135m-instruct" if self.config.model == EMBEDDED_MODEL else Path(self.config.model).name
        return f"{base}+{Path(self.config.adapter).name}" if self.config.adapter else base

    def _model_dir(self) -> Path:
        if self.config.model == EMBEDDED_MODEL:
            from gateway.embedded import embedded_model_dir

            return embedded_model_dir()
        return Path(self.config.model)

    def _load(self) -> None:
        with _LOADING:
            self._load_alone()

    def _load_alone(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = self._model_dir()
        log.info("loading %s from %s", self.config.name, path)
        tokenizer = AutoTokenizer.from_pretrained(path)
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, resolve_dtype(self.config.dtype)))
        if self.config.adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, self.config.adapter, adapter_name=self.DEFAULT_ADAPTER)
            self._default_adapter = self.DEFAULT_ADAPTER
        model.eval()
        self._context_tokens = int(getattr(model.config, "max_position_embeddings", 0) or 0) or None
        # byte-level BPE: a token's vocabulary entry has one character per byte, so no token covers more
        self._longest_token_chars = max(map(len, tokenizer.get_vocab()), default=1)
        self._model, self._tokenizer = model, tokenizer
        log.info("loaded %s (%s)", self.config.name, next(model.parameters()).dtype)

    def _load_adapter(self, name: str, path: str) -> None:
        with _LOADING:
            from peft import PeftModel

            if isinstance(self._model, PeftModel):
                self._model.load_adapter(path, adapter_name=name)
            else:
                self._model = PeftModel.from_pretrained(self._model, path, adapter_name=name).eval()

    async def load_adapter(self, name: str, path: str) -> None:
        """Load a LoRA adapter beside the base weights (several can share one base)."""
        if self._model is None:
            raise UpstreamError(f"model {self.config.name} is not loaded")
        await asyncio.get_running_loop().run_in_executor(self._executor, self._load_adapter, name, path)

    def _unload_adapter(self, name: str) -> None:
        from peft import PeftModel

        if isinstance(self._model, PeftModel) and name in self._model.peft_config:
            self._model.delete_adapter(name)

    async def unload_adapter(self, name: str) -> None:
        if self._model is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._unload_adapter, name)

    def _generating_with(self, adapter: str | None):
        """Activate the adapter a request asks for (or the configured one, or none) for one generate."""
        from contextlib import nullcontext

        from peft import PeftModel

        wanted = adapter or self._default_adapter
        if not isinstance(self._model, PeftModel):
            return nullcontext()
        if wanted is None:
            return self._model.disable_adapter()
        self._model.set_adapter(wanted)
        return nullcontext()

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._load)

    async def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        with self._queue_lock:
            queued, self._queued = self._queued, []
        for item in queued:  # their drain was cancelled with the executor
            item.settle(UpstreamError(f"model {self.config.name} shut down before generating"))

    def _refuse_if_too_long_to_read(self, request: GenerationRequest) -> None:
        """400 at once, before tokenizing, for a prompt with more characters than the context could
        hold even at the longest token: tokenizing 16 MB takes seconds, and generating from it far more."""
        if self._context_tokens is None:
            return
        chars = (len(request.prompt or "") if request.kind == "completion"
                 else sum(len(m.get("content") or "") for m in request.messages or []))
        if chars > self._context_tokens * self._longest_token_chars:
            raise self._too_long(f"more than {self._context_tokens} tokens ({chars} characters)", request)

    def _check_context(self, request: GenerationRequest, prompt_tokens: int) -> None:
        """400 when the prompt and max_tokens do not fit the model's context (OpenAI's
        context_length_exceeded), instead of a generation that fails or crawls."""
        wanted = int(request.params.get("max_tokens", self.config.max_tokens) or 0)
        if self._context_tokens is not None and prompt_tokens + wanted > self._context_tokens:
            raise self._too_long(f"{prompt_tokens} tokens, and max_tokens asks for {wanted} more", request)

    def _too_long(self, size: str, request: GenerationRequest) -> UpstreamError:
        what = "messages" if request.kind == "chat" else "prompt"
        return UpstreamError(f"model {self.config.name} has a context of {self._context_tokens} tokens; the {what} "
                             f"resulted in {size}. Shorten the {what} or lower max_tokens.", status=400,
                             code="context_length_exceeded")

    def _encode(self, request: GenerationRequest) -> Any:
        if request.kind == "chat":
            messages = [{"role": m["role"], "content": m.get("content") or ""} for m in request.messages or []]
            return self._tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
            )
        return self._tokenizer(request.prompt or "", return_tensors="pt")

    def _generate_kwargs(self, request: GenerationRequest) -> dict[str, Any]:
        """The sampling settings of one generate call (a request's own values, else the model's)."""
        params = request.params
        temperature = params.get("temperature", self.config.temperature)
        kwargs: dict[str, Any] = {
            "max_new_tokens": params.get("max_tokens", self.config.max_tokens),
            "pad_token_id": self._tokenizer.pad_token_id,
        }
        if temperature and temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature, top_p=params.get("top_p", self.config.top_p))
        else:
            kwargs.update(do_sample=False)
        return kwargs

    def _call_settings(self, request: GenerationRequest) -> tuple[Any, ...]:
        """What one generate call fixes for all its rows: the adapter and the sampling settings."""
        return (request.adapter or self._default_adapter, tuple(sorted(self._generate_kwargs(request).items())))

    def _batch_key(self, request: GenerationRequest) -> tuple[Any, ...] | None:
        """Queued requests with equal keys share one generate call; None: a seeded one runs alone."""
        return None if request.params.get("seed") is not None else self._call_settings(request)

    def _prompt_ids(self, request: GenerationRequest) -> list[int]:
        return self._encode(request)["input_ids"][0].tolist()

    def _generate_blocking(self, requests: list[GenerationRequest], seed: int | None = None,
                           prompts: list[list[int]] | None = None) -> list[Generation]:
        """One generate call for every sample of `requests` (same adapter and sampling settings):
        prompts left-padded to one width, each repeated `n` times. `prompts`: their token ids, where
        the caller has encoded them already."""
        import torch

        prompts = prompts if prompts is not None else [self._prompt_ids(request) for request in requests]
        rows = [ids for request, ids in zip(requests, prompts) for _ in range(request.n)]
        width = max(len(ids) for ids in rows)
        pad = self._tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in rows])
        attention_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in rows])
        if seed is not None:
            torch.manual_seed(seed)
        with torch.inference_mode(), self._generating_with(requests[0].adapter):
            output = self._model.generate(input_ids=input_ids, attention_mask=attention_mask,
                                          **self._generate_kwargs(requests[0]))
        sequences = iter(output[:, width:].tolist())
        return [self._generation(request, [next(sequences) for _ in range(request.n)], len(ids))
                for request, ids in zip(requests, prompts)]

    def _generation(self, request: GenerationRequest, sequences: list[list[int]], prompt_tokens: int) -> Generation:
        stops = [s for s in (request.params.get("stop") or []) if s]
        candidates = []
        for sequence in sequences:
            ended = answer_length(sequence, self._tokenizer)
            tokens = sequence if ended is None else sequence[:ended]
            text = self._tokenizer.decode(tokens, skip_special_tokens=True)
            text, stopped = _truncate_at_stop(text, stops)
            finish = "stop" if ended is not None or stopped else "length"
            message = {"role": "assistant", "content": text} if request.kind == "chat" else None
            candidates.append(Candidate(text=text, finish_reason=finish, completion_tokens=len(tokens), message=message))
        return Generation(candidates=candidates, prompt_tokens=prompt_tokens, upstream_calls=1)

    def _batches(self, queued: list[_Queued]) -> Iterator[list[_Queued]]:
        """Queued requests grouped into calls: equal keys together, up to max_batch_sequences each."""
        groups: dict[tuple[Any, ...], list[list[_Queued]]] = {}
        for item in queued:
            key = self._batch_key(item.request)
            if key is None:
                yield [item]
                continue
            batches = groups.setdefault(key, [[]])
            if batches[-1] and sum(q.request.n for q in batches[-1]) + item.request.n > self.config.max_batch_sequences:
                batches.append([])
            batches[-1].append(item)
        for batches in groups.values():
            yield from batches

    def _fits_context(self, item: _Queued) -> bool:
        """Encode a queued request's prompt (kept for its generate call) and check that it fits the
        context; one that does not, or cannot be encoded, is settled with its error and joins no batch."""
        try:
            item.prompt_ids = self._prompt_ids(item.request)
            self._check_context(item.request, len(item.prompt_ids))
        except UpstreamError as exc:
            item.settle(exc)
            return False
        except Exception as exc:  # noqa: BLE001 - a prompt the tokenizer cannot encode fails alone, as in a batch
            item.settle(_generation_failed(exc))
            return False
        return True

    def _drain(self) -> None:
        """On the worker thread: generate for everything queued so far (nothing if an earlier drain
        took it), skipping requests whose caller has gone."""
        with self._queue_lock:
            queued, self._queued = self._queued, []
        waiting = [item for item in queued if not item.future.done() and self._fits_context(item)]
        try:
            batches = list(self._batches(waiting))
        except Exception as exc:  # noqa: BLE001 - unreadable sampling settings: each request alone
            batches = [[item] for item in waiting]
            log.warning("could not group queued requests (%s); generating them one by one", exc)
        for batch in batches:
            if self._on_batch:
                self._on_batch(len(batch))
            seed = batch[0].request.params.get("seed")
            try:
                generations = self._generate_blocking([item.request for item in batch],
                                                      None if seed is None else int(seed),
                                                      [item.prompt_ids for item in batch])
            except Exception as exc:  # noqa: BLE001 - a generation failure is the upstream's failure
                error = _generation_failed(exc)
                for item in batch:
                    item.settle(error)
            else:
                for item, generation in zip(batch, generations):
                    item.settle(generation)

    async def generate(self, request: GenerationRequest) -> Generation:
        if self._model is None:
            raise UpstreamError(f"model {self.config.name} is not loaded")
        self._refuse_if_too_long_to_read(request)
        loop = asyncio.get_running_loop()
        queued = _Queued(request, loop.create_future(), loop)
        with self._queue_lock:
            self._queued.append(queued)
        try:
            loop.run_in_executor(self._executor, self._drain)
        except RuntimeError as exc:  # the backend is closing
            raise UpstreamError(f"model {self.config.name} is shutting down") from exc
        return await queued.future

    async def generate_batch(self, requests: list[GenerationRequest], seed: int | None = None) -> list[Generation]:
        """One generate call for several requests with the same adapter and sampling settings (the
        distill sampler's way to use the CPU fully); `seed` seeds the call (the requests' own are not read)."""
        if self._model is None:
            raise UpstreamError(f"model {self.config.name} is not loaded")
        if len({self._call_settings(r) for r in requests}) != 1:
            raise ValueError("generate_batch needs requests with one adapter and one set of sampling settings")
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._generate_blocking,
                                                                requests, seed)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[StreamDelta]:
        from transformers import TextStreamer

        self._refuse_if_too_long_to_read(request)

        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[StreamDelta | BaseException | None] = asyncio.Queue()
        put = lambda item: loop.call_soon_threadsafe(queue.put_nowait, item)  # noqa: E731
        cancelled = threading.Event()

        class QueueStreamer(TextStreamer):
            def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
                if cancelled.is_set():
                    raise RuntimeError("client went away")
                if text:
                    put(StreamDelta(text=text))

        def run() -> None:
            try:
                single = GenerationRequest(kind=request.kind, n=1, params=request.params,
                                           messages=request.messages, prompt=request.prompt, adapter=request.adapter)
                inputs = self._encode(single)
                self._check_context(single, inputs["input_ids"].shape[1])
                streamer = QueueStreamer(self._tokenizer, skip_prompt=True, skip_special_tokens=True)
                import torch

                with torch.inference_mode(), self._generating_with(single.adapter):
                    out = self._model.generate(**inputs, **self._generate_kwargs(single), streamer=streamer)
                generated = out[0, inputs["input_ids"].shape[1]:].tolist()
                ended = answer_length(generated, self._tokenizer)
                put(StreamDelta(
                    finish_reason="stop" if ended is not None else "length",
                    prompt_tokens=inputs["input_ids"].shape[1],
                    completion_tokens=len(generated) if ended is None else ended,
                ))
                put(None)
            except BaseException as exc:  # noqa: BLE001 - handed to the event loop
                put(exc)

        loop.run_in_executor(self._executor, run)
        stops = [s for s in (request.params.get("stop") or []) if s]
        emitted = ""
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, UpstreamError):
                    raise item
                if isinstance(item, BaseException):
                    raise UpstreamError(f"local generation failed: {item}") from item
                if stops and item.text:
                    emitted_before = len(emitted)
                    emitted += item.text
                    cut, stopped = _truncate_at_stop(emitted, stops)
                    if stopped:
                        if len(cut) > emitted_before:
                            yield StreamDelta(text=cut[emitted_before:])
                        yield StreamDelta(finish_reason="stop")
                        cancelled.set()
                        return
                yield item
        finally:
            cancelled.set()
