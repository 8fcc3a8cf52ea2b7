"""Picking a candidate when nothing is verifiable: consensus (MBR) vs random, on questions with one
right answer that no selector is shown.

    python -m bench.selectors [--questions 80] [--best-of 8] [--max-tokens 48] [--samples samples.json]

The embedded SmolLM2 answers generated arithmetic questions ("What is 47 + 38?") and capital-city
questions best-of-N (the served sampling: temperature 0.8, top_p 0.95). A candidate is right when
the answer's number is the last number in it (arithmetic) or the capital's name is in it. Per
selector: accuracy of its pick, and its difference from a random pick (the mean correctness of the
candidates) with a paired bootstrap 95 % interval over questions:
- first: the first candidate (what N=1 serves);
- default scorer: the highest default reward (ties: generation order), i.e. today's pick on such
  prompts, where it sees only repetition, clean endings and length;
- default + consensus: candidates within `tie_margin` of the best reward ordered by consensus;
- consensus: MBR alone (the candidate most similar to the others);
- oracle: any candidate right.
Also: the default scorer's time per best-of-N request (p50/p99), on these prompts and on the
instruction corpus's prompts (long ones included), single-threaded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from bench.instruction_detection import CORPUS
from gateway.backends import GenerationRequest
from gateway.backends.local import LocalBackend
from gateway.bestofn import select_best_candidates
from gateway.config import default_models
from gateway.protocol import ChatMessage, scored_prompt
from gateway.rewards.consensus import consensus
from gateway.rewards.default import build as build_default_scorer
from gateway.rewards.default import instruction_following

CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid", "Portugal": "Lisbon",
    "Japan": "Tokyo", "China": "Beijing", "Russia": "Moscow", "Egypt": "Cairo", "Greece": "Athens",
    "Canada": "Ottawa", "Australia": "Canberra", "Brazil": "Brasilia", "Argentina": "Buenos Aires",
    "Mexico": "Mexico City", "India": "New Delhi", "Kenya": "Nairobi", "Norway": "Oslo", "Sweden": "Stockholm",
    "Finland": "Helsinki", "Poland": "Warsaw", "Austria": "Vienna", "Ireland": "Dublin", "Turkey": "Ankara",
    "Thailand": "Bangkok", "Peru": "Lima", "Chile": "Santiago", "Cuba": "Havana", "Denmark": "Copenhagen",
    "Belgium": "Brussels", "Netherlands": "Amsterdam", "Hungary": "Budapest", "Czech Republic": "Prague",
    "South Korea": "Seoul", "Vietnam": "Hanoi", "Iran": "Tehran", "Iraq": "Baghdad", "Morocco": "Rabat",
    "Nigeria": "Abuja", "Switzerland": "Bern",
}
MARGINS = (0.05, 0.1)


@dataclass
class Question:
    kind: str
    prompt: str
    answer: str

    def right(self, text: str) -> bool:
        if self.kind == "arithmetic":
            numbers = re.findall(r"-?\d+", text.replace(",", ""))
            return bool(numbers) and numbers[-1] == self.answer
        return self.answer.lower() in text.lower()


def questions(count: int, seed: int) -> list[Question]:
    rng = random.Random(seed)
    out = []
    countries = list(CAPITALS)
    rng.shuffle(countries)
    for i in range(count):
        if i % 2 and countries:
            country = countries.pop()
            out.append(Question("capital", f"What is the capital of {country}?", CAPITALS[country]))
        else:
            a, b = rng.randint(10, 99), rng.randint(10, 99)
            op = rng.choice("+-")
            out.append(Question("arithmetic", f"What is {a} {op} {b}? Give the result.", str(a + b if op == "+" else a - b)))
    return out


def bootstrap(diffs: list[float], rounds: int = 2000, seed: int = 0) -> tuple[float, float]:
    rng = random.Random(seed)
    means = sorted(statistics.fmean(rng.choices(diffs, k=len(diffs))) for _ in range(rounds))
    return means[int(0.025 * rounds)], means[int(0.975 * rounds)]


async def sample(questions_: list[Question], best_of: int, max_tokens: int) -> list[list[str]]:
    backend = LocalBackend(default_models()[0])
    await backend.start()
    try:
        texts = []
        for i, q in enumerate(questions_):
            params = {"temperature": 0.8, "top_p": 0.95, "max_tokens": max_tokens, "seed": i}
            generation = await backend.generate(GenerationRequest(
                kind="chat", n=best_of, params=params, messages=[{"role": "user", "content": q.prompt}]))
            texts.append([c.text for c in generation.candidates])
            print(f"\r{i + 1}/{len(questions_)} questions sampled", end="", flush=True)
        print()
        return texts
    finally:
        await backend.close()


def picks(candidates: list[str], prompt: str) -> dict[str, int]:
    scores = instruction_following(prompt, candidates)
    chosen = {"first": 0, "default scorer": select_best_candidates(scores, 1)[0]}
    for margin in MARGINS:
        chosen[f"default + consensus ({margin:g})"] = select_best_candidates(scores, 1, candidates, margin)[0]
    agreement = consensus(candidates)
    chosen["consensus"] = max(range(len(candidates)), key=lambda i: (agreement[i], -i))
    return chosen


def scorer_times(prompts: list[str], candidates: list[list[str]]) -> list[float]:
    times = []
    for prompt, cands in zip(prompts, candidates, strict=True):
        started = time.perf_counter()
        instruction_following(prompt, cands)
        times.append((time.perf_counter() - started) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=80)
    parser.add_argument("--best-of", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples", type=Path, help="a JSON file of sampled candidates: reused if it exists "
                        "(same questions and settings), written after sampling otherwise")
    args = parser.parse_args()
    qs = questions(args.questions, args.seed)
    started = time.perf_counter()
    if args.samples and args.samples.exists():
        texts = json.loads(args.samples.read_text())
    else:
        texts = asyncio.run(sample(qs, args.best_of, args.max_tokens))
        if args.samples:
            args.samples.write_text(json.dumps(texts))
    sampling_s = time.perf_counter() - started

    randoms: dict[str, list[float]] = {}
    diffs: dict[str, dict[str, list[float]]] = {}
    for q, cands in zip(qs, texts, strict=True):
        right = [q.right(t) for t in cands]
        random_pick = statistics.fmean(right)
        outcome = {name: float(right[index]) for name, index in picks(cands, q.prompt).items()}
        outcome["oracle"] = float(any(right))
        for group in (q.kind, "all"):
            randoms.setdefault(group, []).append(random_pick)
            for name, value in outcome.items():
                diffs.setdefault(group, {}).setdefault(name, []).append(value - random_pick)
    print(f"\n{args.questions} questions × best-of-{args.best_of} from the embedded SmolLM2 (max_tokens "
          f"{args.max_tokens}); sampling took {sampling_s:.0f} s")
    for group, by_selector in diffs.items():
        base = statistics.fmean(randoms[group])
        print(f"\n{group} ({len(randoms[group])} questions): random pick {base:.1%}")
        print(f"{'selector':<28} {'accuracy':>9} {'vs random':>10} {'95 % interval':>17}")
        for name, values in by_selector.items():
            low, high = bootstrap(values)
            print(f"{name:<28} {base + statistics.fmean(values):>9.1%} {statistics.fmean(values):>+10.1%} "
                  f"{f'[{low:+.1%}, {high:+.1%}]':>17}")

    build_default_scorer()  # as `tao serve` does at start: patterns compiled, checkers loaded
    corpus = [json.loads(line) for line in CORPUS.read_text().splitlines() if line.strip()]
    corpus_prompts = [scored_prompt([ChatMessage.model_validate(m) for m in row["messages"]]) for row in corpus]
    pools = [texts[i % len(texts)] for i in range(len(corpus_prompts))]
    short = scorer_times([q.prompt for q in qs], texts)
    long_ = scorer_times(corpus_prompts, pools)
    print(f"\nDefault scorer per best-of-{args.best_of} request (ms, one thread):")
    for name, times in (("these questions", short), (f"instruction corpus ({len(corpus_prompts)} prompts)", long_)):
        ordered = sorted(times)
        print(f"  {name:<36} p50 {statistics.median(ordered):.2f}  p99 {ordered[int(0.99 * (len(ordered) - 1))]:.2f}"
              f"  max {ordered[-1]:.2f}")


if __name__ == "__main__":
    main()
