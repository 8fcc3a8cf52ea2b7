"""The bake on prompts people wrote: best-of-N traffic, distill, then IFEval judges the distilled model.

    python -m bench.ifeval_bake --data input_data.jsonl [--train-prompts 200] [--eval-prompts 150]

1. Training traffic: single-turn prompts from the four corpora in `tests/data` (written by people
   for the instruction detector's tests; none is an IFEval prompt, checked here), `--train-prompts`
   of them (seeded), sent through the gateway at best-of-`--best-of` with the default scorer.
2. Distill on that log with the job's recipe, except `--rounds`, `--round-best-of` and the DPO pairing (the job's
   6 rounds of 8 do not fit a CPU session). The gate's verdict is printed, not enforced: the
   checkpoint is always kept so that IFEval can judge it.
3. `bench.ifeval` on `--eval-prompts` IFEval prompts with `--adapter`: base, the gateway's best-of-N
   pick, the oracle, and the distilled model, each at N=1, judged by IFEval's checker.

IFEval's prompts are never trained on; no figure here was used to choose the recipe.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import get_args

from distill.job import run_distill
from gateway.app import create_app
from gateway.config import (DistillConfig, DpoPairing, DPOSettings, RoundSettings, Settings, StoreConfig, default_models,
                            with_updates)
from tao.console import print_outcome
from tao.demo.workload import send_workload
from tao.server_thread import serve_in_thread

CORPORA = sorted((Path(__file__).resolve().parent.parent / "tests" / "data").glob("*.jsonl"))


def training_prompts(count: int, seed: int, exclude: set[str]) -> list[str]:
    """`count` distinct single-turn prompts of the corpora (seeded), none of them in `exclude`."""
    texts = set()
    for path in CORPORA:
        for line in path.read_text().splitlines():
            messages = json.loads(line)["messages"]
            if len(messages) == 1 and messages[0]["role"] == "user":
                texts.add(messages[0]["content"])
    overlap = texts & exclude
    if overlap:
        print(f"left out {len(overlap)} corpus prompts that are IFEval prompts", file=sys.stderr)
    pool = sorted(texts - exclude)
    return random.Random(seed).sample(pool, min(count, len(pool)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="IFEval's input_data.jsonl (for the evaluation)")
    parser.add_argument("--train-prompts", type=int, default=200, help="corpus prompts in the best-of-N traffic")
    parser.add_argument("--best-of", type=int, default=8, help="N of the traffic and of the best-of-N arm")
    parser.add_argument("--max-tokens", type=int, default=256, help="the longest answer, traffic and evaluation")
    parser.add_argument("--rounds", type=int, default=2, help="distill's iterated rounds")
    parser.add_argument("--round-best-of", type=int, default=4, help="samples per training prompt in a round")
    parser.add_argument("--dpo-pairing", choices=get_args(DpoPairing), default=DPOSettings().pairing,
                        help="how DPO pairs a prompt's samples (distill.dpo.pairing)")
    parser.add_argument("--pairs-per-prompt", type=int, default=DPOSettings().max_pairs_per_prompt,
                        help="DPO pairs per prompt at most (distill.dpo.max_pairs_per_prompt)")
    parser.add_argument("--eval-prompts", type=int, default=150, help="IFEval prompts judged (0: all 541)")
    parser.add_argument("--seed", type=int, default=0, help="the training prompts', the traffic's and training's seed")
    parser.add_argument("--workdir", type=Path, default=Path("bench/results/ifeval-bake"),
                        help="the traffic's log (a rerun reuses it) and each recipe's checkpoints")
    parser.add_argument("--ifeval-workdir", type=Path, default=Path("bench/results/ifeval"),
                        help="bench.ifeval's answers (the base arm's are reused across runs)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    run = args.workdir / f"train{args.train_prompts}-n{args.best_of}-t{args.max_tokens}-s{args.seed}"
    recipe = f"r{args.rounds}x{args.round_best_of}-{args.dpo_pairing}{args.pairs_per_prompt}"
    run.mkdir(parents=True, exist_ok=True)
    ifeval_prompts = {json.loads(line)["prompt"] for line in args.data.read_text().splitlines() if line.strip()}
    settings = Settings(
        models=[with_updates(m, max_tokens=args.max_tokens, best_of=args.best_of) for m in default_models()],
        store=StoreConfig(path=run / "tao.db"),
        distill=DistillConfig(rounds=args.rounds, round=RoundSettings(best_of=args.round_best_of), seed=args.seed,
                              dpo=DPOSettings(pairing=args.dpo_pairing, max_pairs_per_prompt=args.pairs_per_prompt),
                              checkpoints_dir=run / "recipes" / recipe, gate_margin=-2.0),
    )
    started = time.time()
    if not (run / "tao.db").exists():
        prompts = training_prompts(args.train_prompts, args.seed, ifeval_prompts)
        with serve_in_thread(create_app(settings), startup_timeout_s=300) as url:
            results = send_workload(url + "/v1", settings.distill.model, prompts, best_of=args.best_of,
                                    concurrency=8, desc=f"best-of-{args.best_of} traffic")
        print(f"traffic: {sum(r.error is None for r in results)} of {len(results)} ok in {time.time() - started:.0f} s")
    traffic_s = time.time() - started
    outcome = run_distill(settings, since=0.0)
    print_outcome(outcome)
    if outcome.path is None:
        raise SystemExit(outcome.message)
    distill_s = time.time() - started - traffic_s
    print(f"recipe {recipe}: traffic {traffic_s:.0f} s, distill {distill_s:.0f} s; adapter {outcome.path}")
    subprocess.run([sys.executable, "-m", "bench.ifeval", "--data", str(args.data), "--prompts", str(args.eval_prompts),
                    "--best-of", str(args.best_of), "--max-tokens", str(args.max_tokens), "--seed", str(args.seed),
                    "--adapter", str(outcome.path), "--workdir", str(args.ifeval_workdir)], check=True)


if __name__ == "__main__":
    main()
