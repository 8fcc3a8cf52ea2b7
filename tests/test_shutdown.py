"""`tao serve` as a real process: SIGTERM while requests are in flight loses no log record."""

import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import sqlite_utils

from tests.fake_upstream import FakeConfig, FakeUpstream
from tests.gateway_process import GatewayProcess, mock_config
from tests.servers import running


def test_sigterm_flushes_every_record(tmp_path: Path):
    upstream = FakeUpstream(FakeConfig(latency_s=0.5, texts=["alpha", "beta", "gamma"]))
    with running(upstream) as upstream_url:
        gw = GatewayProcess(mock_config(tmp_path / "tao.yaml", upstream_url, tmp_path / "tao.db"))

        def ask(i: int) -> int:
            body = {"model": "mock", "messages": [{"role": "user", "content": f"question {i}"}]}
            return httpx.post(gw.url + "/v1/chat/completions", json=body, timeout=30).status_code

        with ThreadPoolExecutor(16) as pool:
            futures = [pool.submit(ask, i) for i in range(16)]
            gw.wait_until(lambda: upstream.calls >= 16, "not all 16 requests reached the upstream")
            gw.proc.send_signal(signal.SIGTERM)
            statuses = [f.result() for f in futures]
        output = gw.wait_exit()
    assert statuses == [200] * 16  # in-flight requests finished during the graceful shutdown
    assert "OPEN" in output  # no API keys: it says so at start
    db = sqlite_utils.Database(tmp_path / "tao.db")
    assert db["requests"].count == 16 and db["candidates"].count == 64
