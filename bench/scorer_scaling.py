"""How the default scorer's time grows with the size of what it reads, 1 kB to 16 MB.

    python -m bench.scorer_scaling [--max-kb 16384] [--min-kb 1]

Three columns per size, one process, one at a time:
- `detect`: the instruction reader on the whole prompt (no window): its own growth, which must
  be linear (ms per kB flat). A quadratic pattern made 40 kB take 12 s before issue 25.
- `score prompt`: what the gateway runs for a best-of-4 request with a prompt of that size, through
  `build_scorer` (the default `reward.read` window: 8 kB from each end of the prompt). Flat.
- `score candidates`: the same with a short prompt and four candidates of that size (the window:
  32 kB from the start and 4 kB from the end of each). Flat.
The prompt is one instruction then filler: `prose` (sentences) or `run-on` (words with no sentence
break, about the instruction's own words, the worst case for a pattern with an unbounded gap).
"""

from __future__ import annotations

import argparse
import asyncio
import time

from gateway.config import DefaultReward
from gateway.rewards import build_scorer
from gateway.rewards.instructions import detect, warm_up

INSTRUCTION = "Answer in at most 50 words and use the word 'river' twice. "
FILLERS = {
    "prose": "The river rose again overnight. Nobody on the hill had seen it coming. ",
    "run-on": "no word in this word list is a placeholder for the word river ",
}
CANDIDATE = "The river rose again overnight and the village watched it from the hill. "


def text_of(filler: str, chars: int, start: str = "") -> str:
    body = start + filler * (chars // len(filler) + 1)
    return body[:chars]


def timed(work) -> float:
    started = time.perf_counter()
    work()
    return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--min-kb", type=int, default=1, help="smallest size (kB); sizes go up by 4x")
    parser.add_argument("--max-kb", type=int, default=16384, help="largest size (kB): 16384 is the default body limit")
    parser.add_argument("--filler", choices=sorted(FILLERS), default=None, help="one filler only (default: both)")
    args = parser.parse_args()
    warm_up()
    scorer = build_scorer(DefaultReward())
    sizes, size = [], args.min_kb
    while size <= args.max_kb:
        sizes.append(size)
        size *= 4

    def score(prompt: str, candidates: list[str]) -> None:
        asyncio.run(scorer.score(prompt, candidates))

    print(f"{'filler':8} {'size':>9} {'detect ms':>10} {'ms/kB':>6} {'score prompt ms':>16} {'score candidates ms':>20}")
    for name in [args.filler] if args.filler else sorted(FILLERS):
        for kb in sizes:
            prompt = text_of(FILLERS[name], kb * 1024, INSTRUCTION)
            detect_ms = timed(lambda: detect(prompt))
            unique = " ref " + "x" * (sizes.index(kb) + 1)  # a window no earlier size had (no cache hit), no number
            prompt_ms = timed(lambda: score(prompt + unique, [CANDIDATE] * 4))
            long_candidates = [text_of(CANDIDATE, kb * 1024, str(i)) for i in range(4)]
            candidates_ms = timed(lambda: score(INSTRUCTION + str(kb), long_candidates))
            label = f"{kb} kB" if kb < 1024 else f"{kb // 1024} MB"
            print(f"{name:8} {label:>9} {detect_ms:10.1f} {detect_ms / kb:6.2f} {prompt_ms:16.1f} {candidates_ms:20.1f}",
                  flush=True)


if __name__ == "__main__":
    main()
