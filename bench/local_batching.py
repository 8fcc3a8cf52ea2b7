"""Does sharing generate calls pay on this CPU? Best-of-N traffic through the gateway on the embedded
model at several concurrencies, with queued requests sharing calls (the default) and without.

    python -m bench.local_batching [--prompts 16] [--best-of 8] [--max-tokens 64] [--concurrency 1 2 4 8]

Each row serves the same prompts through a fresh gateway (the real HTTP path, the OpenAI SDK's
wire format) and prints requests/s, generated tokens/s, mean requests per generate call and the
ratio to concurrency 1 in the same run. `max_batch_sequences: best_of` is "no sharing": every call
holds one request. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import re
import time

import httpx

from gateway.app import create_app
from gateway.config import Settings, StoreConfig, default_models, with_updates
from tao.demo.prompts import generate_prompts
from tao.demo.workload import send_workload
from tao.server_thread import serve_in_thread


def batch_calls(url: str, model: str = "smollm2") -> tuple[float, float]:
    """(generate calls, requests in them) of a gateway's local model so far, from its /metrics."""
    text = httpx.get(url + "/metrics").text
    found = {name: float(value) for name, value in
             re.findall(rf'^tao_local_batch_requests_(count|sum)\{{model="{re.escape(model)}"\}} (\S+)$', text, re.M)}
    return found.get("count", 0.0), found.get("sum", 0.0)


def run(prompts: list[str], best_of: int, max_tokens: int, concurrency: int, max_batch: int,
        workdir: str) -> tuple[float, float, float]:
    """(requests/s, generated tokens/s, requests per generate call) for one setting."""
    models = [with_updates(m, max_tokens=max_tokens, max_batch_sequences=max_batch) for m in default_models()]
    settings = Settings(models=models, store=StoreConfig(path=f"{workdir}/c{concurrency}-b{max_batch}.db"))
    with serve_in_thread(create_app(settings), startup_timeout_s=300) as url:
        send_workload(url + "/v1", "smollm2", prompts[:1], best_of=best_of, concurrency=1, desc="warm-up")
        before = batch_calls(url)
        started = time.perf_counter()
        results = send_workload(url + "/v1", "smollm2", prompts, best_of=best_of, concurrency=concurrency,
                                desc=f"c={concurrency} max_batch_sequences={max_batch}")
        elapsed = time.perf_counter() - started
        after = batch_calls(url)
    failed = [r for r in results if r.error]
    if failed:
        raise SystemExit(f"{len(failed)} requests failed: {failed[0].error}")
    tokens = sum(r.completion_tokens for r in results)
    calls = after[0] - before[0]
    return len(results) / elapsed, tokens / elapsed, (after[1] - before[1]) / calls if calls else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=16, help="Prompts per row.")
    parser.add_argument("--best-of", type=int, default=8, help="N of every request.")
    parser.add_argument("--max-tokens", type=int, default=64, help="Tokens per candidate.")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8], help="Requests in flight.")
    args = parser.parse_args()

    import tempfile

    prompts = generate_prompts(args.prompts, seed=1)
    rows = []
    with tempfile.TemporaryDirectory(prefix="tao-batching-") as workdir:
        for concurrency in args.concurrency:
            for label, max_batch in (("shared calls (default)", 64), ("one request per call", args.best_of)):
                if concurrency == 1 and max_batch != args.best_of:
                    continue  # nothing queues at concurrency 1: the two settings are the same
                rows.append((concurrency, label, *run(prompts, args.best_of, args.max_tokens, concurrency, max_batch,
                                                      workdir)))
    base = next(r[3] for r in rows if r[0] == 1)
    print(f"\n{args.prompts} prompts, best-of-{args.best_of}, {args.max_tokens} tokens, embedded SmolLM2 on CPU\n")
    print("| concurrency | generate calls | requests/s | tokens/s | requests per call | tokens/s vs c=1 |")
    print("|---|---|---|---|---|---|")
    for concurrency, label, rps, tps, per_call in rows:
        print(f"| {concurrency} | {label} | {rps:.2f} | {tps:.0f} | {per_call:.2f} | {tps / base:.2f}× |")


if __name__ == "__main__":
    main()
