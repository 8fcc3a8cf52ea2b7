"""The local backend on the real embedded SmolLM2-135M-Instruct (slow: loads the model)."""

import asyncio
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
import sqlite_utils
from openai import OpenAI

from bench.local_batching import batch_calls
from gateway.app import create_app
from gateway.backends import GenerationRequest
from gateway.backends.local import LocalBackend
from gateway.config import EMBEDDED_MODEL, ModelConfig, Settings, StoreConfig
from gateway.embedded import embedded_model_dir
from gateway.hardware import bf16_native
from tests.servers import running
from tests.waiting import wait_until

pytestmark = pytest.mark.slow
PROMPT = [{"role": "user", "content": "Describe the moon in at most 12 words."}]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    db_path = tmp_path_factory.mktemp("local") / "tao.db"
    app = create_app(Settings(store=StoreConfig(path=db_path)))  # no config: the embedded default
    with running(app, startup_timeout_s=300) as url:
        yield url, OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=300), db_path, app


def test_best_of_on_the_embedded_model_scores_and_logs_real_candidates(served):
    url, client, db_path, _ = served
    reply = client.chat.completions.create(model="smollm2", messages=PROMPT, max_tokens=24,
                                           extra_body={"best_of": 3})
    tao = reply.model_extra["tao"]
    assert tao["best_of"] == 3 and len(tao["scores"]) == 3 and None not in tao["scores"]
    assert tao["scores"][tao["winner"]] == max(tao["scores"])
    assert tao["model_version"] == "smollm2-135m-instruct"
    assert reply.choices[0].message.content.strip()
    assert reply.usage.prompt_tokens > 10 and 0 < reply.usage.completion_tokens <= 3 * 24


def test_streaming_and_completions_on_the_embedded_model(served):
    url, client, db_path, _ = served
    pieces = [c.choices[0].delta.content for c in client.chat.completions.create(
        model="smollm2", messages=PROMPT, max_tokens=16, stream=True, extra_body={"best_of": 1})
        if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 2  # several chunks: streamed as generated, not sent at the end
    text = client.completions.create(model="smollm2", prompt="The capital of France is", max_tokens=8,
                                     temperature=0, extra_body={"best_of": 1}).choices[0].text
    assert "Paris" in text


def test_the_server_answers_while_the_model_generates(served):
    url, client, db_path, _ = served
    story = [{"role": "user", "content": "Tell a long story about a lighthouse keeper."}]
    chunks = iter(client.chat.completions.create(model="smollm2", messages=story, max_tokens=64, temperature=0,
                                                 stream=True, extra_body={"best_of": 1}))
    next(chunks)  # the reply started: the gateway sends it once the model has produced a first token
    started = time.perf_counter()
    assert httpx.get(url + "/healthz").status_code == 200
    health_s = time.perf_counter() - started
    answered_at = time.time()
    request_id = [c for c in chunks if c.choices and c.choices[0].finish_reason][-1].model_extra["tao"]["request_id"]
    db = sqlite_utils.Database(db_path)
    [row] = wait_until(lambda: list(db["requests"].rows_where("id = ?", [request_id])),
                       "the streamed request was never logged")
    generated_until = row["created_at"] + row["latency_ms"] / 1000
    assert health_s < 1.0 and generated_until > answered_at  # answered mid-generation: it runs off the event loop


def test_two_local_models_load_one_after_the_other_and_both_answer(tmp_path: Path, caplog):
    """Two public names on local backends start together. Loading is not thread-safe in transformers
    (a lazy import raced into ImportError; from_pretrained's process-wide dtype left a model with mixed
    float32 and bfloat16 weights), so the loads take turns: one ends before the other starts."""
    models = [ModelConfig(name=name, backend="local", model=EMBEDDED_MODEL, max_tokens=4) for name in ("a", "b")]
    with caplog.at_level("INFO", logger="gateway.backends.local"), \
            running(create_app(Settings(models=models, store=StoreConfig(path=tmp_path / "tao.db"))),
                    startup_timeout_s=300) as url:
        client = OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=300)
        for name in ("a", "b"):
            assert client.chat.completions.create(model=name, messages=PROMPT, extra_body={"best_of": 1}).choices
    events = [(r.created, r.getMessage().split()[0]) for r in caplog.records
              if r.getMessage().startswith(("loading ", "loaded "))]
    assert [kind for _, kind in sorted(events)] == ["loading", "loaded", "loading", "loaded"], events


def test_a_prompt_longer_than_the_context_gets_400_without_generating(served):
    """16 MB is refused before tokenizing; 45 kB (9,000 tokens) is tokenized and refused; a small request beside them
    is answered, and /healthz stays quick throughout."""
    url, client, db_path, _ = served
    for content in ("word " * 3_300_000, "word " * 9_000):
        for stream in (False, True):
            body = {"model": "smollm2", "messages": [{"role": "user", "content": content}], "max_tokens": 8,
                    "stream": stream, "best_of": 1 if stream else 2}
            started = time.perf_counter()
            reply = httpx.post(url + "/v1/chat/completions", json=body, timeout=120)
            assert reply.status_code == 400, reply.text[:300]
            assert reply.json()["error"]["code"] == "context_length_exceeded"
            assert "context of 8192 tokens" in reply.json()["error"]["message"]
            assert time.perf_counter() - started < 30
    reply = client.chat.completions.create(model="smollm2", messages=PROMPT, max_tokens=4, extra_body={"best_of": 1})
    assert reply.choices[0].message.content


def test_requests_queued_while_the_model_works_share_one_generate_call(served):
    """Four requests (best_of 1, 2, 3 and 2) that arrive while the model is busy are answered by
    one generate call, each with its own candidates; a seeded request still runs alone and repeats."""
    url, client, _, app = served
    backend = app.state.completions.engine.backends["smollm2"]
    busy, release = threading.Event(), threading.Event()
    backend.worker.submit(lambda: (busy.set(), release.wait(60)))  # the model is working on something
    assert busy.wait(60)
    calls_before, requests_before = batch_calls(url)
    prompts = ["Name a fruit.", "Name a river.", "Name a planet.", "Name a bird."]
    with ThreadPoolExecutor(4) as pool:
        replies = [pool.submit(client.chat.completions.create, model="smollm2", max_tokens=12,
                               messages=[{"role": "user", "content": p}], extra_body={"best_of": n})
                   for p, n in zip(prompts, (1, 2, 3, 2))]
        deadline = time.monotonic() + 60
        while backend.queue.waiting < 4:  # the real signal: all four are waiting for the model
            assert time.monotonic() < deadline, "the requests never reached the backend"
            time.sleep(0.01)
        release.set()
        tao = [r.result(timeout=120).model_extra["tao"] for r in replies]
    assert [len(t["scores"]) for t in tao] == [1, 2, 3, 2]
    calls, requests = batch_calls(url)
    assert (calls - calls_before, requests - requests_before) == (1, 4)

    seeded = {"model": "smollm2", "max_tokens": 12, "seed": 7, "messages": [{"role": "user", "content": prompts[0]}],
              "extra_body": {"best_of": 1}}
    first = client.chat.completions.create(**seeded).choices[0].message.content
    assert client.chat.completions.create(**seeded).choices[0].message.content == first


def test_a_batch_of_prompts_left_padded_gives_each_prompt_its_own_answers(tmp_path: Path):
    """The distill sampler's path: one call for prompts of different lengths and n; greedy answers
    match those of each prompt alone, and requests that cannot share a call are refused. In float32:
    in bf16 the rounding depends on the batch's shape, so greedy answers may part after a few tokens."""
    greedy = {"temperature": 0, "max_tokens": 10}
    requests = [GenerationRequest(kind="chat", n=n, params=greedy, messages=[{"role": "user", "content": text}])
                for text, n in (("Name a color.", 2), ("What is the capital of France? Answer in one word.", 1))]

    async def run() -> tuple[list, list]:
        backend = LocalBackend(ModelConfig(name="m", backend="local", model=EMBEDDED_MODEL, dtype="float32"))
        await backend.start()
        try:
            together = await backend.generate_batch(requests, seed=0)
            alone = [await backend.generate_batch([r], seed=0) for r in requests]
            with pytest.raises(ValueError):
                await backend.generate_batch([requests[0], GenerationRequest(
                    kind="chat", n=1, params={"temperature": 0.8, "max_tokens": 10}, messages=requests[1].messages)])
            return together, alone
        finally:
            await backend.close()

    together, alone = asyncio.run(run())
    assert [len(g.candidates) for g in together] == [2, 1]
    assert [g.prompt_tokens for g in together] == [g[0].prompt_tokens for g in alone]
    assert together[0].prompt_tokens < together[1].prompt_tokens
    assert [c.text for g in together for c in g.candidates] == [c.text for g in alone for c in g[0].candidates]
    assert "Paris" in together[1].candidates[0].text


def test_bfloat16_weights_load_and_answer_the_same_question():
    """`dtype: bfloat16` loads the weights in bf16 and still answers: greedy, the capital question gives
    the same one-word answer as in float32; `auto` (the default) is bf16 exactly where it is native."""
    question = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    request = GenerationRequest(kind="chat", n=1, params={"temperature": 0, "max_tokens": 8}, messages=question)

    async def answer(dtype: str) -> tuple[str, str]:
        backend = LocalBackend(ModelConfig(name="m", backend="local", model=EMBEDDED_MODEL, dtype=dtype))
        await backend.start()
        try:
            [generation] = await backend.generate_batch([request], seed=0)
            return backend.model.dtype, generation.candidates[0].text
        finally:
            await backend.close()

    bf16, fp32, auto = asyncio.run(answer("bfloat16")), asyncio.run(answer("float32")), asyncio.run(answer("auto"))
    assert (bf16[0], fp32[0]) == ("torch.bfloat16", "torch.float32")
    assert "Paris" in bf16[1] and "Paris" in fp32[1]
    assert auto == (bf16 if bf16_native() else fp32)  # the default: bf16 only where the hardware runs it natively


def test_a_lora_adapter_loads_with_peft_and_changes_the_output(tmp_path: Path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(embedded_model_dir())
    adapter = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    adapter.save_pretrained(tmp_path / "adapter")

    request = GenerationRequest(kind="completion", n=1, prompt="The capital of France is",
                                params={"temperature": 0, "max_tokens": 8})

    async def greedy(config: ModelConfig) -> tuple[str, str]:
        backend = LocalBackend(config)
        await backend.start()
        try:
            return (await backend.generate(request)).candidates[0].text, backend.model_version
        finally:
            await backend.close()

    plain, _ = asyncio.run(greedy(ModelConfig(name="m", backend="local", model=EMBEDDED_MODEL)))
    tuned, version = asyncio.run(greedy(ModelConfig(name="m", backend="local", model=EMBEDDED_MODEL,
                                                    adapter=str(tmp_path / "adapter"))))
    assert version == "smollm2-135m-instruct+adapter"
    assert plain != tuned


def test_rollout_serves_a_trained_adapter_and_leaves_the_base_weights_alone(tmp_path: Path):
    """A few SFT steps make a real adapter; `tao rollout start` loads it (a merged copy of the weights)."""
    import subprocess
    import sys

    from distill.dataset import to_dataset
    from distill.publish import register
    from distill.train import train_sft
    from gateway.config import DistillConfig

    rows = [{"prompt": [{"role": "user", "content": f"Name a color ({i})."}],
             "completion": [{"role": "assistant", "content": "PURPLE PURPLE PURPLE"}]} for i in range(4)]
    config = DistillConfig(max_steps=4, batch_size=2, learning_rate=5e-3)
    trained = train_sft(to_dataset(rows), embedded_model_dir(), tmp_path / "adapter", tmp_path, config)
    settings = Settings(store=StoreConfig(path=tmp_path / "tao.db"))
    app = create_app(settings)
    greedy = {"model": "smollm2", "messages": [{"role": "user", "content": "Name a color."}], "temperature": 0,
              "max_tokens": 8, "extra_body": {"best_of": 1}}
    with running(app, startup_timeout_s=300) as url:
        client = OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=300)
        base_before = client.chat.completions.create(**greedy).choices[0].message.content
        register(sqlite_utils.Database(tmp_path / "tao.db"), {
            "id": "ckpt-1", "created_at": time.time(), "model": "smollm2", "base_model": "embedded", "method": "sft",
            "data_since": 0, "data_until": time.time(), "metrics": {}, "path": str(trained.adapter_dir),
            "status": "candidate"})
        started = subprocess.run([sys.executable, "-m", "gateway", "rollout", "start", "ckpt-1", "--model", "smollm2",
                                  "--canary", "10", "--url", url], capture_output=True, text=True, timeout=300)
        assert started.returncode == 0, started.stdout + started.stderr
        assert "canary" in started.stdout and "ckpt-1" in started.stdout

        candidate = client.chat.completions.create(**greedy, extra_headers={"X-TAO-Arm": "candidate"})
        base_after = client.chat.completions.create(**greedy, extra_headers={"X-TAO-Arm": "base"})
        assert candidate.model_extra["tao"]["arm"] == "candidate"
        assert candidate.model_extra["tao"]["model_version"] == "ckpt-1"
        assert base_after.choices[0].message.content == base_before  # the base weights are untouched
        assert candidate.choices[0].message.content != base_before  # the adapter is really applied
        status = subprocess.run([sys.executable, "-m", "gateway", "rollout", "status", "--url", url],
                                capture_output=True, text=True, timeout=60)
        assert "ckpt-1" in status.stdout and "10%" in status.stdout


def test_the_api_agents_use_on_the_local_backend(served):
    """Tools and logprobs are refused (the local backend would drop them); structured outputs are
    verified by best-of-N; the Responses API answers; embeddings say they are not served here."""
    url, client, db_path, _ = served
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    for fields in ({"logprobs": True}, {"tools": [tool]}):
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model="smollm2", messages=PROMPT, max_tokens=8, **fields)
        assert caught.value.body["param"] == next(iter(fields)) and caught.value.body["code"] == "unsupported_parameter"
    reply = client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": 'Answer with this JSON only: {"ok": true}'}],
        response_format={"type": "json_object"}, max_tokens=16, extra_body={"best_of": 3})
    tao = reply.model_extra["tao"]
    held = [v is None for v in tao["violations"]]
    assert len(held) == 3 and tao["degraded"] == (not any(held))
    if any(held):  # the winner is one that parses
        assert held[tao["winner"]] and isinstance(json.loads(reply.choices[0].message.content), dict)
    response = client.responses.create(model="smollm2", input="Describe the moon in at most 12 words.",
                                       instructions="Be brief.", max_output_tokens=16, extra_body={"best_of": 2})
    assert response.output_text.strip() and response.model_extra["tao"]["best_of"] == 2
    with pytest.raises(openai.NotFoundError) as caught:
        client.embeddings.create(model="smollm2", input="the moon")
    assert caught.value.body["code"] == "embeddings_not_supported"
