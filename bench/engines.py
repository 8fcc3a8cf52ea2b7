"""The engines side by side: the local backend against vLLM, on the base weights and with a LoRA
adapter, best-of-8 requests at several concurrencies and answer lengths.

    python -m bench.engines [--concurrency 1 8 32] [--tokens 48 256] [--engines local vllm]

Each engine is driven through the gateway's own backend object (`LocalBackend`, or the remote
backend over vLLM's OpenAI API with native `n`), so this measures the engine and the call path the
gateway uses, not the scorer or the log. Per cell: `--requests-per-slot` × concurrency requests
(at least 8), sent `concurrency` at a time; tokens/s is completion tokens over the cell's wall
time, and p50/p99 the per-request latency. The adapter is a random one shaped like distill's (r16 on
all linear layers): speed does not depend on what it learnt. vLLM (its CPU build here) is started
from $TAO_VLLM_PYTHON with the flags `tao vllm` uses; the engines run one after the other, never
together (two on 2 cores thrash). Run it alone.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table
from tqdm.auto import tqdm

from bench.local_adapters import random_adapter
from gateway.backends import Backend, GenerationRequest, build_backend
from gateway.config import EMBEDDED_MODEL, ModelConfig
from gateway.embedded import embedded_model_dir
from tao.demo.prompts import generate_prompts
from tao.server_thread import free_port
from tao.vllm_server import VllmServer

BEST_OF = 8
ADAPTER = "bench-adapter"


@dataclass
class Cell:
    engine: str
    weights: str
    concurrency: int
    max_tokens: int
    requests: int
    tokens: int
    seconds: float
    latencies: list[float]

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds

    def latency(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run_cell(backend: Backend, engine: str, adapter: str | None, concurrency: int, max_tokens: int,
                   requests: int, prompts: list[str]) -> Cell:
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    tokens = 0

    async def one(prompt: str) -> None:
        nonlocal tokens
        async with gate:
            started = time.perf_counter()
            generation = await backend.generate(GenerationRequest(
                kind="chat", n=BEST_OF, adapter=adapter, messages=[{"role": "user", "content": prompt}],
                params={"temperature": 0.8, "top_p": 0.95, "max_tokens": max_tokens}))
            latencies.append(time.perf_counter() - started)
            tokens += sum(c.completion_tokens for c in generation.candidates)

    started = time.perf_counter()
    await asyncio.gather(*(one(prompts[i % len(prompts)]) for i in range(requests)))
    return Cell(engine, "adapter" if adapter else "base", concurrency, max_tokens, requests, tokens,
                time.perf_counter() - started, latencies)


async def measure(backend: Backend, engine: str, adapter_dir: Path, args: argparse.Namespace,
                  prompts: list[str]) -> list[Cell]:
    await backend.start()
    try:
        await backend.load_adapter(ADAPTER, str(adapter_dir))
        grid = [(adapter, c, t) for adapter in (None, ADAPTER) for t in args.tokens for c in args.concurrency]
        cells = []
        for adapter, concurrency, tokens in tqdm(grid, desc=f"{engine} cells", unit="cell"):
            await run_cell(backend, engine, adapter, 1, 4, 1, prompts)  # warm-up
            requests = max(8, args.requests_per_slot * concurrency)
            cells.append(await run_cell(backend, engine, adapter, concurrency, tokens, requests, prompts))
        return cells
    finally:
        await backend.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32], help="Requests in flight.")
    parser.add_argument("--tokens", type=int, nargs="+", default=[48, 256], help="max_tokens per answer.")
    parser.add_argument("--engines", nargs="+", default=["local", "vllm"], choices=["local", "vllm"])
    parser.add_argument("--requests-per-slot", type=int, default=2, help="Requests per cell per unit of concurrency.")
    parser.add_argument("--python", help="The vLLM environment's interpreter (default: $TAO_VLLM_PYTHON).")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp())
    adapter_dir = random_adapter(embedded_model_dir(), work / "adapter")
    prompts = generate_prompts(64, seed=0)
    cells: list[Cell] = []
    if "local" in args.engines:
        local = build_backend(ModelConfig(name="bench", backend="local", model=EMBEDDED_MODEL, max_best_of=BEST_OF))
        cells += asyncio.run(measure(local, "local", adapter_dir, args, prompts))
    if "vllm" in args.engines:
        server = VllmServer(embedded_model_dir(), free_port(), served_name="bench", python=args.python,
                            log_path=work / "vllm.log", extra_args=["--max-model-len", "2048"])
        server.start()
        try:
            server.wait_ready(timeout_s=600)
            remote = build_backend(ModelConfig(name="bench", model="hosted_vllm/bench", api_base=f"{server.url}/v1",
                                               api_key="none", max_best_of=BEST_OF, timeout_s=1800))
            cells += asyncio.run(measure(remote, "vllm", adapter_dir, args, prompts))
        finally:
            server.stop()

    table = Table(title=f"engines: best-of-{BEST_OF}, the embedded SmolLM2")
    for column in ("engine", "weights", "in flight", "max tokens", "requests", "tokens/s", "p50 s", "p99 s",
                   "tokens/s vs local"):
        table.add_column(column, justify="left" if column in ("engine", "weights") else "right")
    local_rate = {(c.weights, c.concurrency, c.max_tokens): c.tokens_per_s for c in cells if c.engine == "local"}
    for cell in sorted(cells, key=lambda c: (c.weights, c.max_tokens, c.concurrency, c.engine)):
        baseline = local_rate.get((cell.weights, cell.concurrency, cell.max_tokens))
        table.add_row(cell.engine, cell.weights, str(cell.concurrency), str(cell.max_tokens), str(cell.requests),
                      f"{cell.tokens_per_s:.0f}", f"{statistics.median(cell.latencies):.1f}",
                      f"{cell.latency(0.99):.1f}", f"{cell.tokens_per_s / baseline:.2f}" if baseline else "")
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
