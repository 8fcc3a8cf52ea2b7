"""Gateway overhead and best-of-N latency, side by side in one run.

    python -m bench.overhead [--duration 10] [--litellm-proxy PATH]

Needs `wrk` (Debian: `apt-get install wrk`) as the load generator: it is C, so it takes little of
the CPU the servers under test need. Every server runs as its own process on loopback:

1. the fake OpenAI-compatible upstream with zero latency, called directly;
2. the TAO gateway in front of it at N=1;
3. LiteLLM's own proxy in front of it (when `litellm` with the `[proxy]` extra is installed; pass
   its executable with --litellm-proxy, e.g. from a separate venv, since the proxy's pins differ).

For each: latency at concurrency 1 (what the gateway adds to one request: p50/p99 minus direct)
and throughput at concurrency 64. Then, against an upstream with 200 ms latency, best-of-8 vs N=1
latency through the gateway and the number of upstream calls per request.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tao.server_thread import free_port

ROOT = Path(__file__).resolve().parent.parent
BODY = {"model": "{model}", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16}
WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = [[{body}]]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %f %f %f %d %d\\n", latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.requests / (summary.duration / 1e6), summary.requests, e.status + e.connect + e.read + e.write + e.timeout))
end
"""


def wait_ready(url: str, proc: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    raise TimeoutError(f"{url} did not come up")


def start(args: list[str], ready_url: str, env: dict | None = None) -> subprocess.Popen:
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, **(env or {})})
    wait_ready(ready_url, proc)
    return proc


def stop(procs: list[subprocess.Popen]) -> None:
    """SIGTERM every server started with `start`, then kill what has not exited within 30 s."""
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def wrk(url: str, model: str, connections: int, duration: int, workdir: Path) -> dict[str, float]:
    script = workdir / f"{model}.lua"
    script.write_text(WRK_SCRIPT.replace("{body}", json.dumps(BODY).replace("{model}", model)))
    out = subprocess.run(["wrk", "-t", "1", "-c", str(connections), "-d", f"{duration}s", "--latency", "-s",
                          str(script), url], capture_output=True, text=True, check=True).stdout
    line = next(line for line in out.splitlines() if line.startswith("RESULT"))
    p50, p99, rps, requests, errors = line.split()[1:]
    return {"p50_ms": float(p50), "p99_ms": float(p99), "rps": float(rps), "requests": int(requests),
            "errors": int(errors)}


def best_of_latency(gateway: str, model: str, best_of: int, requests: int) -> list[float]:
    latencies = []
    with httpx.Client(timeout=30) as client:
        for _ in range(requests):
            body = {**BODY, "model": model}
            started = time.perf_counter()
            reply = client.post(gateway + "/v1/chat/completions", json=body,
                                headers={"X-TAO-Best-Of": str(best_of), "Authorization": "Bearer sk-bench"})
            reply.raise_for_status()
            latencies.append((time.perf_counter() - started) * 1000)
    return latencies


def upstream_calls(gateway: str, model: str) -> float:
    text = httpx.get(gateway + "/metrics").text
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith(f'tao_upstream_calls_total{{model="{model}"}}'))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--litellm-proxy", default=shutil.which("litellm"),
                        help="the `litellm` proxy executable (default: on PATH)")
    parser.add_argument("--best-of-requests", type=int, default=30)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is required: apt-get install wrk")

    procs: list[subprocess.Popen] = []
    workdir = Path(tempfile.mkdtemp(prefix="tao-bench-"))
    env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    try:
        fast_port, slow_port, gw_port, proxy_port = free_port(), free_port(), free_port(), free_port()
        fast = f"http://127.0.0.1:{fast_port}"
        slow = f"http://127.0.0.1:{slow_port}"
        gateway = f"http://127.0.0.1:{gw_port}"
        procs.append(start([sys.executable, "-m", "tests.fake_upstream", "--port", str(fast_port)], fast + "/v1/models"))
        procs.append(start([sys.executable, "-m", "tests.fake_upstream", "--port", str(slow_port), "--latency-ms",
                            "200"], slow + "/v1/models"))
        config = workdir / "tao.yaml"
        config.write_text(json.dumps({
            "models": [
                {"name": "fast", "backend": "litellm", "model": "openai/mock", "api_base": fast + "/v1",
                 "api_key": "none", "best_of": 1, "num_retries": 0},
                {"name": "slow", "backend": "litellm", "model": "openai/mock", "api_base": slow + "/v1",
                 "api_key": "none", "best_of": 1, "max_best_of": 16, "num_retries": 0},
                {"name": "slow-fanout", "backend": "litellm", "model": "openai/mock", "api_base": slow + "/v1",
                 "api_key": "none", "best_of": 1, "max_best_of": 16, "num_retries": 0, "n_strategy": "fanout"},
            ],
            "store": {"path": str(workdir / "tao.db")},
            "auth": {"api_keys": ["sk-bench"]},  # both proxies check a key, as in production
        }))
        procs.append(start([sys.executable, "-m", "tao", "--log-level", "warning", "serve", "--config",
                            str(config), "--port", str(gw_port)], gateway + "/healthz", env))
        targets = [("direct upstream", fast + "/v1/chat/completions", "mock"),
                   ("tao gateway (N=1)", gateway + "/v1/chat/completions", "fast")]
        if args.litellm_proxy:
            proxy_config = workdir / "proxy.yaml"
            proxy_config.write_text(json.dumps({
                "model_list": [{"model_name": "fast", "litellm_params": {
                    "model": "openai/mock", "api_base": fast + "/v1", "api_key": "none"}}],
                "general_settings": {"master_key": "sk-bench"},
            }))
            procs.append(start([args.litellm_proxy, "--config", str(proxy_config), "--port", str(proxy_port),
                                "--num_workers", "1"], f"http://127.0.0.1:{proxy_port}/health/liveliness", env))
            targets.append(("litellm proxy", f"http://127.0.0.1:{proxy_port}/v1/chat/completions", "fast"))

        for _, url, model in targets:  # warm up every path
            wrk(url, model, 4, 2, workdir)
        rows = []
        for name, url, model in targets:
            one = wrk(url, model, 1, args.duration, workdir)
            many = wrk(url, model, 64, args.duration, workdir)
            rows.append((name, one, many))
        direct_one, direct_many = rows[0][1], rows[0][2]
        print(f"\nOverhead: fake upstream with 0 ms latency, wrk, {args.duration} s per cell, one process each, "
              f"{os.cpu_count()} cores shared by all")
        print(f"{'target':<20} {'c=1 p50 ms':>11} {'c=1 p99 ms':>11} {'added p50':>10} {'added p99':>10} "
              f"{'c=64 req/s':>11} {'c=64 p50 ms':>12} {'errors':>7}")
        for name, one, many in rows:
            print(f"{name:<20} {one['p50_ms']:>11.2f} {one['p99_ms']:>11.2f} "
                  f"{one['p50_ms'] - direct_one['p50_ms']:>10.2f} {one['p99_ms'] - direct_one['p99_ms']:>10.2f} "
                  f"{many['rps']:>11.0f} {many['p50_ms']:>12.2f} {one['errors'] + many['errors']:>7}")
        by_name = {name: many for name, _, many in rows}
        if "litellm proxy" in by_name:
            ratio = by_name["tao gateway (N=1)"]["rps"] / by_name["litellm proxy"]["rps"]
            print(f"throughput tao / litellm proxy: {ratio:.2f}x (target >= 2x)")
        else:
            print("litellm proxy: not installed (pip install 'litellm[proxy]' in a separate venv, pass --litellm-proxy)")
        print(f"throughput tao / direct: {by_name['tao gateway (N=1)']['rps'] / direct_many['rps']:.2f}x")

        print("\nBest-of-N against an upstream with 200 ms latency (sequential requests through the gateway)")
        print(f"{'N strategy':<22} {'best_of':>7} {'p50 ms':>8} {'p99 ms':>8} {'vs N=1':>7} {'upstream calls/request':>23}")
        base = None
        for model, strategy, best_of in (("slow", "-", 1), ("slow", "native n (1 call)", 8),
                                         ("slow-fanout", "fan-out (N calls)", 8)):
            calls_before = upstream_calls(gateway, model)
            latencies = best_of_latency(gateway, model, best_of, args.best_of_requests)
            calls = (upstream_calls(gateway, model) - calls_before) / len(latencies)
            p50 = statistics.median(latencies)
            p99 = sorted(latencies)[max(0, int(len(latencies) * 0.99) - 1)]
            base = base or p50
            print(f"{strategy:<22} {best_of:>7} {p50:>8.1f} {p99:>8.1f} {p50 / base:>6.2f}x {calls:>23.2f}")
    finally:
        stop(procs)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
