"""A small OpenAI-compatible upstream for tests and benchmarks (a raw ASGI app: cheap per request).

Behaviour is set on `FakeUpstream.config` (mutable while serving): latency, whether `n` is
honoured, canned texts, failures and hangs. It counts calls and records request bodies.

    python -m tests.fake_upstream --port 9100 --latency-ms 200
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

import orjson


@dataclass
class FakeConfig:
    latency_s: float = 0.0
    supports_n: bool = True
    texts: list[str] = field(default_factory=lambda: ["Hello from the fake upstream."])
    fail_calls: int = 0  # the next k calls fail with fail_status
    fail_status: int = 500
    fail_every: int = 0  # every k-th call fails (0: never)
    hang_s: float = 0.0  # sleep this long before answering (to trigger client timeouts)
    token_gap_s: float = 0.0  # streams: pause this long before each chunk after the first
    adapter_texts: list[str] = field(default_factory=lambda: ["Hello from a LoRA adapter."])
    fail_lora_load: bool = False
    refused_adapters: list[str] = field(default_factory=list)  # names whose load fails (their files are gone)
    known_models: list[str] | None = None  # as vLLM: other model names (not loaded adapters) get 404; None: any
    # A tool-using model: chat answers cycle through these assistant messages (tool_calls included) instead
    # of `texts`; once the last message is a tool result, the answer is `after_tool_text`.
    messages: list[dict[str, Any]] | None = None
    after_tool_text: str = "Done: the tool answered."
    embedding_dims: int | None = 4  # /embeddings answers vectors this long; None: 404, as a server without them


class FakeUpstream:
    def __init__(self, config: FakeConfig | None = None) -> None:
        self.config = config or FakeConfig()
        self.calls = 0
        self.bodies: list[dict[str, Any]] = []
        self.adapters: dict[str, str] = {}  # loaded like vLLM's runtime LoRA: name -> path
        self._text_counter = itertools.count()
        self.disconnects = 0  # calls whose client (the gateway) went away before the answer was complete

    def _next_text(self, model: str) -> str:
        texts = self.config.adapter_texts if model in self.adapters else self.config.texts
        return texts[next(self._text_counter) % len(texts)]

    async def __call__(self, scope: dict, receive, send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path = scope["path"]
        if scope["method"] == "GET" and path.endswith("/models"):
            return await self._send_json(send, 200, {"object": "list", "data": [{"id": "mock", "object": "model"}]})
        if path.endswith("/load_lora_adapter"):  # vLLM's runtime LoRA API, with its answers
            request = orjson.loads(body)
            if self.config.fail_lora_load or request["lora_name"] in self.config.refused_adapters:
                return await self._send_json(send, 400, {"error": {"message": "no such adapter path"}})
            if request["lora_name"] in self.adapters:
                return await self._send_json(send, 400, {"error": {
                    "message": f"The lora adapter '{request['lora_name']}' has already been loaded. If you want to "
                    "load the adapter in place, set 'load_inplace' to True.", "type": "BadRequestError", "code": 400}})
            self.adapters[request["lora_name"]] = request["lora_path"]
            return await self._send_json(send, 200, {"status": "ok"})
        if path.endswith("/unload_lora_adapter"):
            name = orjson.loads(body)["lora_name"]
            if self.adapters.pop(name, None) is None:
                return await self._send_json(send, 404, {"error": {
                    "message": f"The lora adapter '{name}' cannot be found.", "type": "NotFoundError", "code": 404}})
            return await self._send_json(send, 200, {"status": "ok"})
        if path.endswith("/embeddings"):
            return await self._embed(send, orjson.loads(body))
        try:
            if path.endswith("/chat/completions"):
                return await self._complete(send, receive, orjson.loads(body), chat=True)
            if path.endswith("/completions"):
                return await self._complete(send, receive, orjson.loads(body), chat=False)
        except _ClientGone:
            self.disconnects += 1
            return
        await self._send_json(send, 404, {"error": {"message": "not found", "type": "invalid_request_error"}})

    async def _embed(self, send, body: dict[str, Any]) -> None:
        self.bodies.append(body)
        if self.config.embedding_dims is None:
            return await self._send_json(send, 404, {"error": {"message": "this server has no embeddings",
                                                               "type": "NotFoundError", "code": 404}})
        inputs = body.get("input")
        inputs = [inputs] if isinstance(inputs, str) else list(inputs or [])
        data = [{"object": "embedding", "index": i, "embedding": [float(len(str(x)) % 7) / 7] * self.config.embedding_dims}
                for i, x in enumerate(inputs)]
        tokens = sum(len(str(x).split()) for x in inputs)
        await self._send_json(send, 200, {"object": "list", "data": data, "model": body.get("model", "mock"),
                                          "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    def _next_message(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """The tool-using model's next assistant message (None: answer with `texts`)."""
        messages = body.get("messages") or []
        if messages and messages[-1].get("role") == "tool":
            return {"role": "assistant", "content": self.config.after_tool_text}
        if not self.config.messages:
            return None
        return self.config.messages[next(self._text_counter) % len(self.config.messages)]

    def restart(self) -> None:
        """Forget every loaded adapter, as a restarted vLLM server does."""
        self.adapters.clear()

    async def _complete(self, send, receive, body: dict[str, Any], *, chat: bool) -> None:
        self.calls += 1
        self.bodies.append(body)
        cfg = self.config
        model = body.get("model", "")
        if cfg.known_models is not None and model not in cfg.known_models and model not in self.adapters:
            return await self._send_json(send, 404, {"error": {
                "message": f"The model `{model}` does not exist.", "type": "NotFoundError", "code": 404}})
        if cfg.hang_s:
            await _pause(receive, cfg.hang_s)
        if cfg.latency_s:
            await asyncio.sleep(cfg.latency_s)
        if cfg.fail_calls > 0 or (cfg.fail_every and self.calls % cfg.fail_every == 0):
            cfg.fail_calls = max(0, cfg.fail_calls - 1)
            return await self._send_json(send, cfg.fail_status, {"error": {
                "message": "fake upstream failure", "type": "server_error", "param": None, "code": None}})
        n = int(body.get("n") or 1) if cfg.supports_n else 1
        messages = [self._next_message(body) if chat else None for _ in range(n)]
        messages = [m or {"role": "assistant", "content": self._next_text(body.get("model", ""))} for m in messages] \
            if chat else []
        texts = [m.get("content") or "" for m in messages] if chat else \
            [self._next_text(body.get("model", "")) for _ in range(n)]
        prompt_tokens = len(orjson.dumps(body.get("messages") or body.get("prompt") or "")) // 4
        created = int(time.time())
        logprobs = bool(body.get("logprobs"))
        if body.get("stream"):
            return await self._stream(send, receive, texts[0], chat=chat, created=created,
                                      prompt_tokens=prompt_tokens, logprobs=logprobs,
                                      tool_calls=messages[0].get("tool_calls") if chat else None)
        if chat:
            choices = [{"index": i, "message": m, "finish_reason": "tool_calls" if m.get("tool_calls") else "stop",
                        "logprobs": _logprobs(m.get("content") or "", i) if logprobs else None}
                       for i, m in enumerate(messages)]
        else:
            choices = [{"index": i, "text": t, "finish_reason": "stop",
                        "logprobs": _logprobs(t, i, chat=False) if logprobs else None} for i, t in enumerate(texts)]
        completion_tokens = sum(len(t.split()) for t in texts)
        await self._send_json(send, 200, {
            "id": f"fake-{self.calls}", "object": "chat.completion" if chat else "text_completion",
            "created": created, "model": body.get("model", "mock"), "choices": choices,
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        })

    async def _stream(self, send, receive, text: str, *, chat: bool, created: int, prompt_tokens: int,
                      logprobs: bool = False, tool_calls: list[dict[str, Any]] | None = None) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        obj = "chat.completion.chunk" if chat else "text_completion"
        words = text.split(" ") if text else []
        for i, word in enumerate(words):
            if i and self.config.token_gap_s:
                await _pause(receive, self.config.token_gap_s)
            piece = word if i == 0 else " " + word
            lp = _logprobs([piece], 0, chat=chat) if logprobs else None
            choice = ({"index": 0, "delta": {"content": piece}, "finish_reason": None, "logprobs": lp} if chat
                      else {"index": 0, "text": piece, "finish_reason": None, "logprobs": lp})
            await send({"type": "http.response.body", "more_body": True, "body": b"data: " + orjson.dumps(
                {"id": "fake-stream", "object": obj, "created": created, "model": "mock", "choices": [choice]}) + b"\n\n"})
        for k, call in enumerate(tool_calls or []):  # as OpenAI streams a call: its name first, then its arguments in pieces
            arguments = call["function"]["arguments"]
            pieces = [{"index": k, "id": call["id"], "type": "function",
                       "function": {"name": call["function"]["name"], "arguments": ""}},
                      {"index": k, "function": {"arguments": arguments[:len(arguments) // 2]}},
                      {"index": k, "function": {"arguments": arguments[len(arguments) // 2:]}}]
            for piece in pieces:
                choice = {"index": 0, "delta": {"tool_calls": [piece]}, "finish_reason": None}
                await send({"type": "http.response.body", "more_body": True, "body": b"data: " + orjson.dumps(
                    {"id": "fake-stream", "object": obj, "created": created, "model": "mock",
                     "choices": [choice]}) + b"\n\n"})
        finish = "tool_calls" if tool_calls else "stop"
        final = ({"index": 0, "delta": {}, "finish_reason": finish} if chat
                 else {"index": 0, "text": "", "finish_reason": finish})
        await send({"type": "http.response.body", "more_body": True, "body": b"data: " + orjson.dumps(
            {"id": "fake-stream", "object": obj, "created": created, "model": "mock", "choices": [final]}) + b"\n\n"})
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(words),
                 "total_tokens": prompt_tokens + len(words)}
        await send({"type": "http.response.body", "more_body": True, "body": b"data: " + orjson.dumps(
            {"id": "fake-stream", "object": obj, "created": created, "model": "mock", "choices": [],
             "usage": usage}) + b"\n\n"})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})

    @staticmethod
    async def _send_json(send, status: int, payload: dict[str, Any]) -> None:
        data = orjson.dumps(payload)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
        await send({"type": "http.response.body", "body": data})


def _logprobs(text: str | list[str], choice: int, chat: bool = True) -> dict[str, Any]:
    """Logprobs in OpenAI's shape, one entry per word (or per given token); each choice's values differ, so a
    test can tell them apart."""
    words = text if isinstance(text, list) else text.split(" ") if text else []
    values = [-0.01 * (choice + 1) * (i + 1) for i in range(len(words))]
    if chat:
        return {"content": [{"token": w, "logprob": v, "bytes": list(w.encode()),
                             "top_logprobs": [{"token": w, "logprob": v, "bytes": list(w.encode())}]}
                            for w, v in zip(words, values)], "refusal": None}
    return {"tokens": words, "token_logprobs": values, "top_logprobs": [{w: v} for w, v in zip(words, values)],
            "text_offset": [0] * len(words)}


class _ClientGone(Exception):
    pass


async def _pause(receive, seconds: float) -> None:
    """Sleep, unless the client disconnects first (then stop answering it, as a real server would)."""
    async def disconnected() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    try:
        await asyncio.wait_for(disconnected(), seconds)
    except TimeoutError:
        return
    raise _ClientGone


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="OpenAI-compatible fake upstream for tests and benchmarks.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--no-n", action="store_true", help="ignore `n` (return one choice per call)")
    args = parser.parse_args()
    app = FakeUpstream(FakeConfig(latency_s=args.latency_ms / 1000, supports_n=not args.no_n))
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
