"""What logging costs: the writer's sustained rate, and request latency with logging on vs off.

    python -m bench.store [--records 20000] [--requests 3000] [--concurrency 32]

1. The writer alone: best-of-8 records (8 candidates of ~300 characters, as the gateway logs
   them) written by `Store` with its journal and without, against the previous writer's way
   (sqlite-utils `insert_all`, one call per table per batch), in one run. Records/s committed,
   from the first `log()` to an empty queue, and the µs one `log()` call takes (the request path's
   share: the journal's write is in it).
2. Through the gateway: `tao serve` (its own process) in front of the fake upstream (its own
   process, 50 ms latency), best-of-8 chat requests at the given concurrency from an aiohttp
   client in this process. Three arms: logging with the journal (the default), logging without it
   (a second `tao serve`, `store.journal: false`), and no logging (`log_requests: false`); the runs
   alternate so drift hits all. p50/p99 per arm, the ratios of p99s, and the deepest queue
   /healthz reported. Also the upstream alone (n=8) for reference.
Run it alone on the machine: every process shares the same cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import sqlite_utils

from bench.overhead import start, stop
from gateway.store import RequestLog, Store
from tao.server_thread import free_port

TEXT = ("A plausible answer of about three hundred characters, the size of a short best-of-N candidate; it has "
        "clauses, commas, and a finish. " * 3)[:300]


def record(i: int) -> RequestLog:
    rid = f"bench-{i}"
    request = {"id": rid, "created_at": time.time(), "model": "m", "arm": "base", "model_version": "v",
               "endpoint": "chat", "messages": json.dumps([{"role": "user", "content": f"Question {i}?"}]),
               "prompt": f"Question {i}?", "params": '{"temperature": 0.8}', "best_of": 8, "n": 1,
               "n_generated": 8, "winner_index": 3, "latency_ms": 60.0, "upstream_ms": 55.0, "scoring_ms": 0.3,
               "prompt_tokens": 12, "completion_tokens": 480, "upstream_calls": 1, "stream": 0, "user": None,
               "caller": "anonymous", "status": "ok", "http_status": 200, "error": None}
    candidates = [{"request_id": rid, "idx": k, "text": TEXT, "message": None, "finish_reason": "stop",
                   "tokens": 60, "score": k / 10, "won": int(k == 3), "returned_rank": 0 if k == 3 else None}
                  for k in range(8)]
    return RequestLog(request=request, candidates=candidates)


def writer_rate(workdir: Path, count: int, journal: bool) -> tuple[float, float]:
    """Records/s committed, and µs per `log()` call."""
    store = Store(workdir / f"writer-{journal}.db", journal=journal)
    records = [record(i) for i in range(count)]
    store.start()
    started = time.perf_counter()
    for r in records:
        store.log(r)
    logged = time.perf_counter()
    while store.queue_depth():
        time.sleep(0.005)
    elapsed = time.perf_counter() - started
    store.close()
    return count / elapsed, (logged - started) / count * 1e6


def insert_all_rate(workdir: Path, count: int, batch_size: int = 256) -> float:
    """The previous writer's statements, same batches, same thread layout (one writer)."""
    Store(workdir / "insert_all.db")  # same schema
    db = sqlite_utils.Database(workdir / "insert_all.db")
    records = [record(i) for i in range(count)]
    started = time.perf_counter()
    for at in range(0, count, batch_size):
        batch = records[at:at + batch_size]
        db["candidates"].insert_all([c for r in batch for c in r.candidates], replace=True)
        db["requests"].insert_all((r.request for r in batch), replace=True)
    return count / (time.perf_counter() - started)


async def load(url: str, model: str, requests: int, concurrency: int, body_extra: dict) -> list[float]:
    latencies: list[float] = []
    todo = iter(range(requests))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        async def worker() -> None:
            for i in todo:
                body = {"model": model, "messages": [{"role": "user", "content": f"Describe item {i} in at most "
                                                      "ten words."}], **body_extra}
                started = time.perf_counter()
                async with session.post(url, json=body) as reply:
                    await reply.read()
                    if reply.status != 200:
                        raise RuntimeError(f"HTTP {reply.status}")
                latencies.append((time.perf_counter() - started) * 1000)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


async def deepest_queue(url: str, stop: asyncio.Event) -> int:
    deepest = 0
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            async with session.get(url + "/healthz") as reply:
                deepest = max(deepest, (await reply.json())["store_queue_depth"])
            await asyncio.sleep(0.05)
    return deepest


async def measured(url: str, model: str, requests: int, concurrency: int, gateway: str | None,
                   body_extra: dict) -> tuple[list[float], int]:
    stop = asyncio.Event()
    watcher = asyncio.create_task(deepest_queue(gateway, stop)) if gateway else None
    latencies = await load(url, model, requests, concurrency, body_extra)
    stop.set()
    return latencies, (await watcher if watcher else 0)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=20000, help="records for the writer-alone rate")
    parser.add_argument("--requests", type=int, default=3000, help="requests per gateway run")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2, help="on/off pairs of gateway runs")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="tao-bench-store-"))
    procs: list[subprocess.Popen] = []
    try:
        print(f"Writer alone: {args.records} best-of-8 records (8 × 300-character candidates), one thread")
        (journalled, log_us), (unjournalled, bare_us) = (writer_rate(workdir, args.records, True),
                                                         writer_rate(workdir, args.records, False))
        old = insert_all_rate(workdir, args.records)
        print(f"{'writer':<44} {'records/s':>10} {'candidates/s':>13} {'µs/log()':>9}")
        for name, rate, us in (("Store, with the journal (default)", journalled, f"{log_us:.1f}"),
                               ("Store, no journal", unjournalled, f"{bare_us:.1f}"),
                               ("previous (sqlite-utils insert_all)", old, "")):
            print(f"{name:<44} {rate:>10.0f} {rate * 8:>13.0f} {us:>9}")
        print(f"ratio Store (journal) / previous: {journalled / old:.2f}x; log() with / without the journal: "
              f"{log_us / bare_us:.2f}x\n")

        upstream_port = free_port()
        upstream = f"http://127.0.0.1:{upstream_port}"
        procs.append(start([sys.executable, "-m", "tests.fake_upstream", "--port", str(upstream_port),
                            "--latency-ms", "50"], upstream + "/v1/models"))
        model = {"backend": "litellm", "model": "openai/mock", "api_base": upstream + "/v1", "api_key": "none",
                 "best_of": 8, "num_retries": 0}
        gateways = {}
        for journal in (True, False):
            config = workdir / f"tao-{journal}.yaml"
            config.write_text(json.dumps({"models": [{"name": "logged", **model},
                                                     {"name": "unlogged", "log_requests": False, **model}],
                                          "store": {"path": str(workdir / f"tao-{journal}.db"), "journal": journal}}))
            port = free_port()
            gateways[journal] = f"http://127.0.0.1:{port}"
            procs.append(start([sys.executable, "-m", "tao", "--log-level", "warning", "serve", "--config",
                                str(config), "--port", str(port)], gateways[journal] + "/healthz",
                               {"LITELLM_LOCAL_MODEL_COST_MAP": "True"}))
        arms = {"logging, journal": (gateways[True], "logged"), "logging, no journal": (gateways[False], "logged"),
                "logging off": (gateways[True], "unlogged")}
        for url, name in arms.values():  # warm-up
            asyncio.run(load(url + "/v1/chat/completions", name, 200, args.concurrency, {}))
        results: dict[str, list[float]] = {arm: [] for arm in arms}
        deepest = 0
        for _ in range(args.rounds):
            for arm, (url, name) in arms.items():
                latencies, depth = asyncio.run(measured(url + "/v1/chat/completions", name, args.requests,
                                                        args.concurrency, url, {}))
                results[arm] += latencies
                deepest = max(deepest, depth)
        direct, _ = asyncio.run(measured(upstream + "/v1/chat/completions", "mock", args.requests, args.concurrency,
                                         None, {"n": 8}))
        print(f"Through the gateway: best-of-8, upstream latency 50 ms, c={args.concurrency}, "
              f"{args.rounds} × {args.requests} requests per arm, alternating; {os.cpu_count()} cores shared")
        print(f"{'arm':<22} {'p50 ms':>8} {'p99 ms':>8} {'req/s-ish':>10}")
        for arm, values in (*results.items(), ("upstream alone (n=8)", direct)):
            print(f"{arm:<22} {statistics.median(values):>8.1f} {percentile(values, 0.99):>8.1f} "
                  f"{args.concurrency * 1000 / statistics.mean(values):>10.0f}")
        p99 = {arm: percentile(values, 0.99) for arm, values in results.items()}
        p50 = {arm: statistics.median(values) for arm, values in results.items()}
        print(f"p99 logging (journal) / off: {p99['logging, journal'] / p99['logging off']:.2f}x (goal <= 1.1x); "
              f"journal / no journal: p50 {p50['logging, journal'] / p50['logging, no journal']:.2f}x, "
              f"p99 {p99['logging, journal'] / p99['logging, no journal']:.2f}x; deepest log queue seen: "
              f"{deepest} records")
    finally:
        stop(procs)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
