"""`tao serve` as a real child process, for tests of what happens to it from outside (signals,
locked or full disks, open-file limits)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.servers import free_port
from tests.waiting import wait_until


def mock_config(path: Path, upstream_url: str, db: Path, extra: str = "") -> Path:
    """A tao.yaml serving `mock` from a fake upstream at best_of 4, logging to `db`."""
    path.write_text(f"""
models:
  - name: mock
    backend: litellm
    model: openai/mock
    api_base: {upstream_url}/v1
    api_key: none
    best_of: 4
    max_best_of: 16
reward: {{kind: default}}
store: {{path: {db}, busy_timeout_s: 0.2, shutdown_timeout_s: 2}}
{extra}
""")
    return path


class GatewayProcess:
    def __init__(self, config: Path, preexec: Callable[[], None] | None = None, workers: int = 1) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
        self.proc = subprocess.Popen([sys.executable, "-m", "tao", "serve", "--config", str(config), "--port",
                                      str(self.port), "--workers", str(workers)], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, env=env, preexec_fn=preexec)
        self.output = ""
        weakref.finalize(self, self.proc.kill)  # a failed test must not leave a server running
        self.wait_until(lambda: self._health_status() is not None, "the gateway did not start", timeout_s=60)

    def _health_status(self) -> int | None:
        assert self.proc.poll() is None, f"the gateway exited: {self.proc.communicate()[0]}"
        try:
            return httpx.get(self.url + "/healthz", timeout=5).status_code
        except httpx.TransportError:
            return None

    def health(self) -> dict:
        return httpx.get(self.url + "/healthz", timeout=5).json()

    def wait_until(self, condition: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
        wait_until(condition, what, timeout_s, interval_s=0.05)

    def ask(self, count: int, concurrency: int = 16) -> list[str]:
        """Send `count` best-of-4 chat requests; the request ids of those answered 200."""
        def one(i: int) -> str | None:
            body = {"model": "mock", "messages": [{"role": "user", "content": f"Describe item {i} briefly."}]}
            reply = httpx.post(self.url + "/v1/chat/completions", json=body, timeout=60)
            return reply.json()["tao"]["request_id"] if reply.status_code == 200 else None

        with ThreadPoolExecutor(concurrency) as pool:
            return [rid for rid in pool.map(one, range(count)) if rid]

    def terminate(self, timeout_s: float = 60.0) -> str:
        """SIGTERM, and the process's whole output once it has exited (fails if it does not in time)."""
        self.proc.send_signal(signal.SIGTERM)
        return self.wait_exit(timeout_s)

    def wait_exit(self, timeout_s: float = 60.0) -> str:
        """The process's whole output once it has exited (after a signal sent by the caller)."""
        try:
            self.output, _ = self.proc.communicate(timeout=timeout_s)
        finally:
            self.proc.kill()
        assert self.proc.returncode in (0, -signal.SIGTERM), self.output
        return self.output
