"""`tao serve` as a real process: SIGTERM while requests are in flight loses no log record."""

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import sqlite_utils

from tao.fake_upstream import FakeConfig, FakeUpstream
from tests.servers import free_port, running


def test_sigterm_flushes_every_record(tmp_path: Path):
    upstream = FakeUpstream(FakeConfig(latency_s=0.5, texts=["alpha", "beta", "gamma"]))
    with running(upstream) as upstream_url:
        config = tmp_path / "tao.yaml"
        config.write_text(f"""
models:
  - name: mock
    backend: litellm
    model: openai/mock
    api_base: {upstream_url}/v1
    api_key: none
    best_of: 4
    max_best_of: 16
reward: {{kind: default}}
store: {{path: {tmp_path / 'tao.db'}}}
""")
        port = free_port()
        env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
        proc = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--config", str(config), "--port",
                                 str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(base + "/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline and proc.poll() is None, "gateway did not start"
                time.sleep(0.1)

            def ask(i: int) -> int:
                body = {"model": "mock", "messages": [{"role": "user", "content": f"question {i}"}]}
                return httpx.post(base + "/v1/chat/completions", json=body, timeout=30).status_code

            with ThreadPoolExecutor(16) as pool:
                futures = [pool.submit(ask, i) for i in range(16)]
                deadline = time.monotonic() + 30
                while upstream.calls < 16:  # until all 16 are waiting on the slow upstream
                    assert time.monotonic() < deadline, f"{upstream.calls} of 16 requests reached the upstream"
                    time.sleep(0.01)
                proc.send_signal(signal.SIGTERM)
                statuses = [f.result() for f in futures]
            output, _ = proc.communicate(timeout=60)
        finally:
            proc.kill()
    assert proc.returncode in (0, -signal.SIGTERM), output  # uvicorn re-raises the signal after its shutdown
    assert statuses == [200] * 16  # in-flight requests finished during the graceful shutdown
    assert "OPEN" in output  # no API keys: it says so at start
    db = sqlite_utils.Database(tmp_path / "tao.db")
    assert db["requests"].count == 16 and db["candidates"].count == 64
