"""The production path for real: the gateway in front of a real vLLM server (the CPU build here)
serving the embedded SmolLM2 with runtime LoRA.

vLLM runs from its own environment ($TAO_VLLM_PYTHON; `.ci/run` installs it, see
docs/operations/vllm.md). Without one these tests are skipped and say so; CI always has one. One
vLLM server is started for the module (about a minute on 2 cores) and restarted once, on purpose.
"""

import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import httpx
import openai
import pytest

from gateway.app import create_app
from gateway.config import ModelConfig, RolloutConfig, Settings, StoreConfig
from gateway.embedded import embedded_model_dir
from gateway.store import Checkpoint, CheckpointStatus, connection, register_checkpoint
from tao.vllm_server import VLLM_PYTHON_ENV, VllmServer, VllmUnavailable, vllm_python
from tests.fake_upstream import FakeConfig, FakeUpstream
from tests.servers import free_port, running
from tests.waiting import wait_until

pytestmark = pytest.mark.slow
CHECKPOINT = "smollm2-lora-test"
PROMPT = [{"role": "user", "content": "Name three colours."}]
# Small servers that start fast: eager mode skips torch.compile (a classifier server was ready in 31 s
# instead of 107 s here); what the tests check does not depend on compiled kernels.
TEST_SERVER_ARGS = ["--max-model-len", "2048", "--max-num-seqs", "16", "--enforce-eager"]


def _vllm_available() -> str | None:
    try:
        vllm_python()
    except VllmUnavailable as exc:
        return str(exc)
    return None


@pytest.fixture(scope="module")
def vllm(tmp_path_factory) -> Iterator[VllmServer]:
    if (why := _vllm_available()) is not None and not os.environ.get(VLLM_PYTHON_ENV):
        pytest.skip(f"no vLLM to test against: {why}")
    log = tmp_path_factory.mktemp("vllm") / "vllm.log"
    server = VllmServer(embedded_model_dir(), free_port(), served_name="smollm2", max_lora_rank=16, log_path=log,
                        extra_args=TEST_SERVER_ARGS)
    server.start()
    try:
        server.wait_ready(timeout_s=600)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def adapter(tmp_path_factory) -> Path:
    """A real LoRA adapter for SmolLM2 whose B weights are not zero, so it changes the answers."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(embedded_model_dir()),
                           LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.05)
    path = tmp_path_factory.mktemp("adapter") / CHECKPOINT
    model.save_pretrained(path)
    return path


@contextmanager
def gateway(vllm: VllmServer | list[VllmServer | SimpleNamespace], db: Path, **rollout) -> Iterator[tuple[str, openai.OpenAI]]:
    servers = vllm if isinstance(vllm, list) else [vllm]
    model = ModelConfig(name="smollm2", backend="litellm", model="hosted_vllm/smollm2",
                        api_base=[f"{server.url}/v1" for server in servers], api_key="none", best_of=4, max_best_of=8,
                        max_tokens=24, num_retries=1, replica_cooldown_s=1.0)
    settings = Settings(models=[model], store=StoreConfig(path=db),
                        rollout=RolloutConfig(**{"shadow_fraction": 0.0, "check_interval_s": 3600, **rollout}))
    with running(create_app(settings), server_config=settings.server) as url:
        yield url, openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)


def rows(db: Path, count: int) -> list[dict]:
    def written() -> list[dict] | None:
        with connection(db) as conn:
            found = list(conn["requests"].rows_where(order_by="created_at")) if conn["requests"].exists() else []
        return found if len(found) >= count else None

    return wait_until(written, f"{count} requests were not logged", timeout_s=30)


def loaded_adapters(vllm: VllmServer) -> set[str]:
    return {m["id"] for m in httpx.get(f"{vllm.url}/v1/models", timeout=10).json()["data"]} - {"smollm2"}


def test_best_of_n_is_one_native_n_call_with_usage_and_streaming_at_n1(vllm, tmp_path: Path):
    with gateway(vllm, tmp_path / "tao.db") as (_, client):
        reply = client.chat.completions.create(model="smollm2", messages=PROMPT, extra_body={"best_of": 4})
        tao = reply.model_extra["tao"]
        assert tao["best_of"] == 4 and len(tao["scores"]) == 4 and reply.choices[0].message.content
        [row] = rows(tmp_path / "tao.db", 1)
        assert row["upstream_calls"] == 1 and row["n_generated"] == 4  # vLLM's own n, not 4 calls
        with connection(tmp_path / "tao.db") as db:
            tokens = [c["tokens"] for c in db["candidates"].rows_where("request_id = ?", [tao["request_id"]])]
        assert reply.usage.completion_tokens == sum(tokens) > 0 and reply.usage.prompt_tokens > 0

        chunks = list(client.chat.completions.create(model="smollm2", messages=PROMPT, stream=True,
                                                     extra_body={"best_of": 1}))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text and any(c.choices and c.choices[0].finish_reason for c in chunks)

        seeded = [client.chat.completions.create(model="smollm2", messages=PROMPT, temperature=1.0, seed=11,
                                                 extra_body={"best_of": 1}).choices[0].message.content
                  for _ in range(2)]
        assert seeded[0] == seeded[1]  # the seed reached vLLM
        stopped = client.chat.completions.create(model="smollm2", messages=PROMPT, temperature=0, stop=[","],
                                                 extra_body={"best_of": 1})
        assert "," not in stopped.choices[0].message.content and stopped.choices[0].finish_reason == "stop"


def register(db: Path, adapter: Path) -> None:
    with connection(db) as conn:
        register_checkpoint(conn, Checkpoint(id=CHECKPOINT, created_at=time.time(), model="smollm2", base_model="base",
                                             method="dpo", data_since=0, data_until=time.time(), metrics={},
                                             path=str(adapter), status=CheckpointStatus.CANDIDATE))


def answer(client: openai.OpenAI, arm: str) -> tuple[str, str | None]:
    """The arm's answer at temperature 0, and the model version that gave it."""
    reply = client.chat.completions.create(model="smollm2", messages=PROMPT, temperature=0,
                                           extra_headers={"X-TAO-Arm": arm}, extra_body={"best_of": 1})
    return reply.choices[0].message.content, reply.model_extra["tao"]["model_version"]


def test_a_rollout_loads_the_adapter_into_vllm_survives_both_restarts_and_a_rollback_unloads_it(vllm, adapter,
                                                                                                tmp_path: Path):
    db = tmp_path / "tao.db"
    with gateway(vllm, db) as (url, client):
        register(db, adapter)
        started = httpx.post(f"{url}/admin/rollout/smollm2/start", json={"checkpoint": CHECKPOINT, "best_of": 1},
                             timeout=300)
        assert started.status_code == 200, started.text
        assert loaded_adapters(vllm) == {CHECKPOINT}  # loaded before any traffic

        base, candidate = answer(client, "base"), answer(client, "candidate")
        assert candidate[1] == CHECKPOINT and base[1] != CHECKPOINT
        assert candidate[0] != base[0]  # the adapter, not the base weights, answered

    # The gateway restarts while vLLM still holds the adapter: it resumes ("already loaded" is loaded).
    # (vLLM restarting under a running gateway is the replica test's, below.)
    with gateway(vllm, db) as (url, client):
        assert answer(client, "candidate") == candidate

        rolled_back = httpx.post(f"{url}/admin/rollout/smollm2/rollback", timeout=60).json()
        assert rolled_back["state"] == "rolled_back"
        wait_until(lambda: loaded_adapters(vllm) == set(), "the rolled-back adapter is still loaded in vLLM", 30)
        assert answer(client, "base") == base


def test_an_adapter_vllm_refuses_answers_502_with_its_reason_and_the_incumbent_keeps_everything(vllm, tmp_path: Path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(embedded_model_dir()),
                           LoraConfig(r=32, target_modules=["q_proj"]))  # above --max-lora-rank 16
    too_big = tmp_path / "rank32"
    model.save_pretrained(too_big)
    db = tmp_path / "tao.db"
    with gateway(vllm, db) as (url, client):
        register(db, too_big)
        refused = httpx.post(f"{url}/admin/rollout/smollm2/start", json={"checkpoint": CHECKPOINT}, timeout=300)
        assert refused.status_code == 502, refused.text
        assert "rank" in refused.json()["error"]["message"].lower()
        reply = client.chat.completions.create(model="smollm2", messages=PROMPT, extra_body={"best_of": 2})
        assert reply.model_extra["tao"]["arm"] == "base"


def test_distill_samples_an_adapter_on_the_serving_vllm_and_frees_it(vllm, adapter):
    """`distill.sample_on: serving`: the gate's and the rounds' sampler loads the adapter into the
    running vLLM under a name of its own, samples base and adapter with the same seeds, and frees it.
    (The seeds do not make vLLM's samples bit-repeatable on this CPU: a request's numbers depend a
    little on what it is batched with, so the paired samples share their start, not every token.)"""
    import asyncio

    from distill.dataset import LoggedPrompt
    from distill.sampling import PolicySampler
    from gateway.rewards import build_scorer

    served = ModelConfig(name="smollm2", backend="litellm", model="hosted_vllm/smollm2", api_base=f"{vllm.url}/v1",
                         api_key="none", max_tokens=16, temperature=1.0)
    prompts = [LoggedPrompt(key=str(i), messages=[{"role": "user", "content": text}], prompt_text=text)
               for i, text in enumerate(["Name three colours.", "Say hello in French."])]
    during: set[str] = set()

    async def sample() -> tuple[list, list]:
        async with PolicySampler(embedded_model_dir(), served, build_scorer(Settings().reward), {"new": adapter},
                                 on_serving=True) as sampler:
            during.update(loaded_adapters(vllm))
            base = await sampler.answers(prompts, 2, seed=3, adapter=None)
            new = await sampler.answers(prompts, 2, seed=3, adapter="new")
            return base, new

    base, new = asyncio.run(sample())
    [name] = during
    assert name.startswith("distill-") and name.endswith("-new")  # its own name on a shared server
    assert loaded_adapters(vllm) == set()  # freed on the way out
    assert [[a.text for a in answers] for answers in base] != [[a.text for a in answers] for answers in new]
    assert all(a.tokens > 0 and 0 <= a.score <= 1 for answers in base + new for a in answers)


def test_the_vllm_scorer_reads_a_reward_model_from_vllms_pooling_runner(tmp_path: Path):
    """The `vllm` scorer against the CPU build's pooling runner: a SmolLM2 sequence classifier (one
    logit, a seeded random head: what `tao reward train` writes, untrained) served on /classify scores
    as transformers does, and a candidate longer than the server's context is cut, not refused."""
    import asyncio

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from gateway.config import VLLMReward
    from gateway.rewards.base import reward_model_input
    from gateway.rewards.vllm_scorer import VLLMRewardScorer

    if (why := _vllm_available()) is not None and not os.environ.get(VLLM_PYTHON_ENV):
        pytest.skip(f"no vLLM to test against: {why}")
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(embedded_model_dir(), num_labels=1).eval()
    model.config.pad_token_id = model.config.eos_token_id
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir())
    model.save_pretrained(tmp_path / "rm")
    tokenizer.save_pretrained(tmp_path / "rm")
    server = VllmServer(tmp_path / "rm", free_port(), served_name="rm", lora=False, log_path=tmp_path / "vllm-rm.log",
                        extra_args=["--enforce-eager", "--max-model-len", "512"])  # a classifier: the pooling runner
    server.start()
    try:
        server.wait_ready(timeout_s=600)
        scorer = VLLMRewardScorer(VLLMReward(api_base=f"{server.url}/v1", model="rm", tokenizer=str(tmp_path / "rm")))
        prompt = "What is the capital of France?"
        candidates = ["Paris is the capital of France.", "I do not know.", "Lyon, I think."]
        served = asyncio.run(scorer.score(prompt, candidates))
        with torch.no_grad():
            local = [torch.sigmoid(model(**tokenizer(reward_model_input(tokenizer, prompt, c), return_tensors="pt"))
                                   .logits[0, 0]).item() for c in candidates]
        assert served == pytest.approx(local, abs=0.02)  # bf16 on the server, fp32 here
        [long] = asyncio.run(scorer.score(prompt, ["word " * 2000]))  # ~2000 tokens, the server holds 512
        assert 0 < long < 1
    finally:
        server.stop()


def test_two_replicas_one_killed_under_best_of_8_traffic_fails_no_request_and_comes_back_with_the_adapter(
        vllm, adapter, tmp_path: Path):
    """The module's vLLM and a second replica; the rollout's adapter on both. The vLLM is killed
    (SIGKILL) under best-of-8 traffic: every request is answered by the other. Restarted, it is probed
    back in with the adapter loaded again (vLLM keeps none across a restart) and takes traffic.

    The second replica is the fake upstream, which loads adapters as vLLM's API does: what is real
    here is vLLM dying and coming back without its adapters; a second vLLM would only add 40 s of
    start-up to the suite (tests/test_replicas.py covers the routing itself)."""
    fake = FakeUpstream(FakeConfig(texts=["An answer from the other replica."]))
    with running(fake) as second_url:
        db = tmp_path / "tao.db"
        with gateway([vllm, SimpleNamespace(url=second_url)], db) as (url, client):
            register(db, adapter)
            started = httpx.post(f"{url}/admin/rollout/smollm2/start", timeout=300,
                                 json={"checkpoint": CHECKPOINT, "best_of": 1, "canary": 10})
            assert started.status_code == 200, started.text
            assert loaded_adapters(vllm) == {CHECKPOINT} == set(fake.adapters)  # on every replica

            served, errors, stop = [], [], threading.Event()

            def traffic() -> None:
                while not stop.is_set():
                    try:
                        client.chat.completions.create(model="smollm2", messages=PROMPT, max_tokens=8,
                                                       extra_body={"best_of": 8})
                        served.append(1)
                    except openai.APIError as exc:
                        errors.append(exc)

            senders = [threading.Thread(target=traffic) for _ in range(4)]
            for sender in senders:
                sender.start()
            wait_until(lambda: len(served) >= 2, "no best-of-8 traffic was served", timeout_s=120)
            vllm.stop(signal.SIGKILL)  # mid-traffic: its calls in flight fail and are made again on the other
            killed_at = len(served)
            wait_until(lambda: len(served) >= killed_at + 4, "traffic stopped after a replica was killed", 120)
            stop.set()
            for sender in senders:
                sender.join(120)
            assert errors == [], errors[:3]
            assert httpx.get(url + "/healthz").json()["replicas_down"] == ["smollm2 api_base[0]"]

            vllm.start()
            vllm.wait_ready(timeout_s=600)
            wait_until(lambda: httpx.get(url + "/healthz").json()["status"] == "ok",
                       "the restarted vLLM was not probed back into service", timeout_s=60)
            assert loaded_adapters(vllm) == {CHECKPOINT}  # loaded again before it took traffic
            calls = httpx.get(url + "/healthz").json()["replicas"]["smollm2"][0]["calls"]
            for _ in range(2):
                assert answer(client, "candidate")[1] == CHECKPOINT
                client.chat.completions.create(model="smollm2", messages=PROMPT, max_tokens=8, extra_body={"best_of": 2})
            health = httpx.get(url + "/healthz").json()
            assert health["replicas"]["smollm2"][0]["calls"] > calls and health["status"] == "ok"
