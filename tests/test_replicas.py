"""One model over several servers (`api_base` as a list): least-outstanding routing, a failing replica
taken out without failing a client request, probed back in with the rollout's adapter loaded again,
and a server that is down at start named in /healthz. Fault injection needs servers we can stop and
start at will: the fake upstream, answering as vLLM's LoRA API does (the real two-vLLM case is in
tests/test_vllm.py)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai
import pytest

from gateway.app import create_app
from gateway.config import ModelConfig, RolloutConfig, Settings, StoreConfig
from tests.fake_upstream import FakeConfig, FakeUpstream
from tests.servers import free_port, running
from tests.test_rollout import CHECKPOINT, register
from tests.waiting import wait_until

PROMPT = [{"role": "user", "content": "Say something."}]


class StoppableServer:
    """A fake vLLM on a fixed port that a test can stop (connections refused) and start again (as a
    restarted vLLM: without the adapters it held)."""

    def __init__(self, texts: list[str]) -> None:
        self.upstream = FakeUpstream(FakeConfig(known_models=["mock"], texts=texts, latency_s=0.05))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._stop: threading.Event | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.upstream.restart()
        self._stop, started = threading.Event(), threading.Event()

        def serve() -> None:
            with running(self.upstream, port=self.port):
                started.set()
                self._stop.wait()

        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()
        assert started.wait(30), "the fake server did not start"

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


@pytest.fixture
def replicas() -> Iterator[list[StoppableServer]]:
    servers = [StoppableServer(["from replica A."]), StoppableServer(["from replica B."])]
    for server in servers:
        server.start()
    yield servers
    for server in servers:
        if server._thread and server._thread.is_alive():
            server.stop()


def settings(tmp_path: Path, api_base: str | list[str], **model) -> Settings:
    config = {"name": "mock", "model": "openai/mock", "api_base": api_base, "api_key": "none", "best_of": 4,
              "num_retries": 2, "replica_cooldown_s": 0.2, **model}
    return Settings(models=[ModelConfig(**config)], store=StoreConfig(path=tmp_path / "tao.db"),
                    rollout=RolloutConfig(check_interval_s=3600))


@contextmanager
def gateway(tmp_path: Path, api_base: str | list[str], **model) -> Iterator[str]:
    with running(create_app(settings(tmp_path, api_base, **model))) as url:
        yield url


def ask(client: openai.OpenAI, best_of: int = 4) -> str:
    reply = client.chat.completions.create(model="mock", messages=PROMPT, extra_body={"best_of": best_of})
    return reply.choices[0].message.content


def health(url: str) -> dict:
    return httpx.get(url + "/healthz", timeout=10).json()


def retries(url: str) -> float:
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith('tao_upstream_retries_total{model="mock"}'):
            return float(line.split()[-1])
    return 0.0


def test_requests_spread_over_replicas_by_outstanding_calls(tmp_path, replicas):
    a, b = replicas
    with gateway(tmp_path, [a.url, b.url]) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: ask(client), range(24)))
        assert set(answers) == {"from replica A.", "from replica B."}
        assert abs(a.upstream.calls - b.upstream.calls) <= 8, (a.upstream.calls, b.upstream.calls)
        assert a.upstream.calls + b.upstream.calls == 24  # best-of-4 in one native-n call each, no retries
        assert health(url)["status"] == "ok" and health(url)["replicas_down"] == []


def test_a_killed_replica_fails_no_request_and_comes_back_with_the_adapter(tmp_path, replicas):
    a, b = replicas
    with gateway(tmp_path, [a.url, b.url]) as url:
        register(tmp_path / "tao.db")
        started = httpx.post(url + "/admin/rollout/mock/start", json={"checkpoint": CHECKPOINT, "canary": 50})
        assert started.status_code == 200, started.text
        assert CHECKPOINT in a.upstream.adapters and CHECKPOINT in b.upstream.adapters  # on every replica
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)

        b.stop()
        with ThreadPoolExecutor(8) as pool:  # every request answered, by A, while B refuses connections
            answers = list(pool.map(lambda _: ask(client, best_of=8), range(24)))
        assert len(answers) == 24 and "from replica B." not in answers
        assert retries(url) >= 1  # the calls B failed were made again on A, and counted
        down = health(url)
        assert down["status"] == "degraded" and down["replicas_down"] == ["mock api_base[1]"]
        assert "connect" in down["replicas"]["mock"][1]["last_error"].lower()  # a request's error, or the probe's
        assert str(b.port) not in str(down)  # /healthz is public: no internal address in it

        b.start()  # a restarted vLLM holds no adapters: the probe loads the rollout's before B takes traffic
        wait_until(lambda: health(url)["status"] == "ok", "replica B was not probed back into service", timeout_s=15)
        assert CHECKPOINT in b.upstream.adapters
        calls_before = b.upstream.calls
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda _: ask(client), range(16)))
        assert b.upstream.calls > calls_before  # B takes traffic again


def test_a_server_down_at_start_is_named_and_its_requests_get_a_clear_502(tmp_path):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with gateway(tmp_path, dead, num_retries=1) as url:  # the gateway starts anyway
        body = health(url)
        assert body["status"] == "degraded" and body["replicas_down"] == ["mock api_base[0]"]
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)
        with pytest.raises(openai.APIStatusError) as raised:
            ask(client)
        assert raised.value.status_code == 502
        error = raised.value.body
        assert error["type"] == "upstream_error" and "Cannot connect" in error["message"], error


def test_an_adapter_one_replica_refuses_is_not_rolled_out_anywhere(tmp_path, replicas):
    a, b = replicas
    b.upstream.config.refused_adapters = [CHECKPOINT]  # as vLLM refuses a rank above --max-lora-rank
    with gateway(tmp_path, [a.url, b.url]) as url:
        register(tmp_path / "tao.db")
        started = httpx.post(url + "/admin/rollout/mock/start", json={"checkpoint": CHECKPOINT, "canary": 50})
        assert started.status_code == 502 and "no such adapter path" in started.json()["error"]["message"]
        assert CHECKPOINT not in a.upstream.adapters  # freed where it had loaded
        assert not [r for r in httpx.get(url + "/admin/rollout").json()["rollouts"] if r["state"] == "canary"]
        assert {ask(openai.OpenAI(base_url=url + "/v1", api_key="none"), best_of=1) for _ in range(6)} <= {
            "from replica A.", "from replica B."}  # the base weights serve everything


def test_api_base_lists_each_server_once():
    with pytest.raises(ValueError, match="twice"):
        ModelConfig(name="m", model="openai/m", api_base=["http://a/v1", "http://a/v1"])
    with pytest.raises(ValueError, match="empty"):
        ModelConfig(name="m", model="openai/m", api_base=[])
