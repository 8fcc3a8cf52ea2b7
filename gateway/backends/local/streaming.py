"""One answer sent token by token: a generate call on the worker thread feeding the event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from concurrent.futures import Executor

from gateway.backends.base import GenerationRequest, StreamDelta
from gateway.backends.local.model import LocalModel, answer_length, truncate_at_stop
from gateway.errors import UpstreamError


async def stream_answer(model: LocalModel, worker: Executor, request: GenerationRequest) -> AsyncIterator[StreamDelta]:
    """One candidate of `request`, as the model produces it; generation stops when the caller leaves
    or a stop sequence appears."""
    from transformers import TextStreamer

    model.refuse_if_too_long_to_read(request)
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
        import torch

        try:
            single = GenerationRequest(kind=request.kind, n=1, params=request.params,
                                       messages=request.messages, prompt=request.prompt, adapter=request.adapter)
            inputs = model.encode(single)
            prompt_tokens = inputs["input_ids"].shape[1]
            model.check_context(single, prompt_tokens)
            streamer = QueueStreamer(model.tokenizer, skip_prompt=True, skip_special_tokens=True)
            with torch.inference_mode(), model.weights_for(single.adapter) as weights:
                out = weights.generate(**inputs, **model.generate_kwargs(single), streamer=streamer)
            generated = out[0, prompt_tokens:].tolist()
            ended = answer_length(generated, model.tokenizer)
            put(StreamDelta(finish_reason="stop" if ended is not None else "length", prompt_tokens=prompt_tokens,
                            completion_tokens=len(generated) if ended is None else ended))
            put(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the event loop
            put(exc)

    loop.run_in_executor(worker, run)
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
                cut, stopped = truncate_at_stop(emitted, stops)
                if stopped:
                    if len(cut) > emitted_before:
                        yield StreamDelta(text=cut[emitted_before:])
                    yield StreamDelta(finish_reason="stop")
                    return
            yield item
    finally:
        cancelled.set()
