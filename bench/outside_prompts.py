"""The default scorer on prompts whose constraints are mostly not IFEval's: does it read only what it
can read whole, and does its best-of-N pick beat a random candidate?

    python -m bench.outside_prompts [--corpus PATH] [--sample] [--best-of 8] [--show-errors]

The corpus (`tests/data/outside/prompts.jsonl`) was written by someone who saw only a description
of the task, never the detector: each prompt with its constraints annotated (the sentence, a kind,
its arguments, and whether it is one of IFEval's kinds). At least half state constraints outside
IFEval's: ranges, positions, relations between sentences, counts of other units, formats.

1. **Reading** (instant). Each reading the detector makes is true when the prompt states that
   IFEval kind, false otherwise: precision, recall over the IFEval-kind constraints, arguments
   right among the true readings (relations compared as the bounds they check), and the false
   readings by the shape of what was misread. Constraint sentences marked unverifiable: the
   share of the outside ones marked, and the IFEval-kind ones marked (a lost reading).
2. **Picking** (`--sample`: N answers per prompt from the embedded model, kept in `--workdir`, so a
   rerun resumes). Each answer is judged by the corpus's own checker (`bench/outside_checker.py`)
   and IFEval's, as the share of the prompt's annotated constraints it meets. The scorer's pick
   (with the gateway's near-tie consensus) against a random answer (the mean) and the best one:
   the share of that headroom the pick captures, with a 95 % bootstrap interval over prompts
   (numerator and denominator resampled together), on the outside-kinds prompts and on those
   where the detector read nothing; and the pick without consensus beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean
from typing import Any

from bench.ifeval import Answers, sample_arm
from bench.outside_checker import check
from gateway.bestofn.selection import select_best_candidates
from gateway.config import DefaultReward
from gateway.rewards import build_scorer
from gateway.rewards.checks import RELATION_KWARGS, bounds, satisfied
from gateway.rewards.instructions import read_prompt

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "data" / "outside" / "prompts.jsonl"



@dataclass(frozen=True)
class Sample:
    key: int
    id: str
    prompt: str
    group: str
    constraints: list[dict[str, Any]]

    @property
    def outside(self) -> bool:
        return any(not c["ifeval"] for c in self.constraints)


def load(path: Path) -> list[Sample]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [Sample(i, r["id"], r["prompt"], r["group"], r["constraints"]) for i, r in enumerate(rows)]


# Outside kinds that check exactly what an IFEval kind (with our relations) checks: a reading of that
# IFEval kind is a true reading of them. "At most 100 words" is annotated word_count {max: 100}
# (IFEval says only "less than"), and the detector's `number_words` "at most 100" checks the same.
EQUIVALENT = {"length_constraints:number_words": "word_count", "length_constraints:number_sentences": "sentence_count",
              "keywords:frequency": "keyword_count", "keywords:letter_frequency": "no_letter",
              "detectable_format:number_bullet_lists": "bullet_count",
              "length_constraints:number_paragraphs": "paragraph_count",  # with separator: blank line
              "tao:emoji_count": "emoji_count", "tao:hashtag_count": "hashtag_count", "tao:starts_with": "starts_with",
              "tao:ends_with_question": "ends_with_question"}


def _normalized(instruction_id: str, kwargs: dict[str, Any]) -> Any:
    """Arguments as compared: a count as its inclusive (min, max), text case-folded, lists as sets."""
    out: dict[str, Any] = {}
    keys = RELATION_KWARGS.get(instruction_id)
    for key, value in kwargs.items():
        if keys and key in keys or key == "upper":
            continue
        out[key] = sorted(str(v).lower().strip(" .") for v in value) if isinstance(value, list) else \
            str(value).lower().strip(" .") if isinstance(value, str) else value
    if keys and keys[0] in kwargs:
        low = high = None
        for kind, n in bounds(kwargs[keys[0]], kwargs[keys[1]], kwargs.get("upper")):
            low, high = (n, high) if kind == "at least" else (low, n - 1)
        out["min"], out["max"] = low or None, high  # "at least 0" bounds nothing
    return out


def _outside_normalized(instruction_id: str, kind: str, args: dict[str, Any]) -> Any:
    """An outside annotation in the terms of the equivalent IFEval kind's `_normalized`."""
    if kind in ("starts_with", "ends_with_question"):
        return {k: str(v).lower().strip() for k, v in args.items()}
    if kind == "no_letter":
        return {"letter": args["letter"].lower(), "min": None, "max": 0}
    if kind == "bullet_count":
        return {"num_bullets": args.get("min")} if args.get("min") == args.get("max") else {"range": args}
    out = {"min": args.get("min"), "max": args.get("max")}
    if kind == "keyword_count":
        out["keyword"] = args["keyword"].lower().strip(" .")
    return out


def _matches(constraint: Any, stated: list[dict[str, Any]]) -> tuple[bool, bool]:
    """(right kind, right arguments) of one reading against the prompt's annotations."""
    same = [c for c in stated if c["ifeval"] and c["kind"] == constraint.id]
    equivalent = [c for c in stated if not c["ifeval"] and c["kind"] == EQUIVALENT.get(constraint.id)]
    if constraint.id == "length_constraints:number_paragraphs" and constraint.kwargs.get("separator") != "blank line":
        equivalent = []  # IFEval's *** paragraphs are not blank-line ones
    if constraint.id == "keywords:frequency" and _normalized(constraint.id, constraint.kwargs)["min"] == 1 and \
            _normalized(constraint.id, constraint.kwargs)["max"] is None:  # "at least once" is existence
        keyword = constraint.kwargs["keyword"].lower()
        if any(c["ifeval"] and c["kind"] == "keywords:existence" and keyword in [k.lower() for k in c["args"]["keywords"]]
               for c in stated):
            return True, True
    if constraint.id == "length_constraints:nth_paragraph_first_word" and constraint.kwargs["num_paragraphs"] is None:
        starts = [c for c in stated if c["kind"] == "paragraph_starts_with"]  # no count stated: checked as this
        if starts:
            nth, word = constraint.kwargs["nth_paragraph"], constraint.kwargs["first_word"].lower()
            return True, any(c["args"].get("paragraph") == nth and c["args"]["prefix"].lower() == word for c in starts)
    if not same and not equivalent:
        return False, False
    mine = _normalized(constraint.id, constraint.kwargs)
    right = any(mine == _normalized(c["kind"], c["args"]) for c in same)
    if constraint.id == "length_constraints:number_paragraphs":
        return True, right or any(c["args"] == {"min": mine["num_paragraphs"], "max": mine["num_paragraphs"]}
                                  for c in equivalent)
    if constraint.id == "keywords:letter_frequency":
        mine = {"letter": constraint.kwargs["letter"], "min": mine["min"] if mine["min"] else None, "max": mine["max"]}
    return True, right or any(mine == _outside_normalized(constraint.id, c["kind"], c["args"]) for c in equivalent)


@dataclass
class ReadingTally:
    true: int = 0
    false: int = 0
    args_right: int = 0
    missed: int = 0
    outside_sentences: int = 0
    outside_marked: int = 0
    ifeval_marked: int = 0
    false_by_group: Counter = field(default_factory=Counter)


def reading(samples: list[Sample], show_errors: bool) -> ReadingTally:
    tally = ReadingTally()
    for s in samples:
        read = read_prompt(s.prompt)
        for constraint in read.constraints:
            kind_right, args_right = _matches(constraint, s.constraints)
            if kind_right:
                tally.true += 1
                tally.args_right += args_right
                if show_errors and not args_right:
                    print(f"ARGS  {s.id}: {constraint.id} {constraint.kwargs} vs "
                          f"{[c['args'] for c in s.constraints if c['kind'] in (constraint.id, EQUIVALENT.get(constraint.id))]}")
            else:
                tally.false += 1
                tally.false_by_group[s.group] += 1
                if show_errors:
                    print(f"FALSE {s.id} ({s.group}): {constraint.id} {constraint.kwargs} «{s.prompt[:150]}»")
        found = {c.id for c in read.constraints}
        for c in s.constraints:
            if c["ifeval"] and c["kind"] not in found:
                tally.missed += 1
                if show_errors:
                    print(f"MISS  {s.id}: {c['kind']} {c['args']} «{c['sentence']}»")
        for c in s.constraints:
            marked = any(c["sentence"] in u or u in c["sentence"] for u in read.unverifiable)
            if c["ifeval"]:
                tally.ifeval_marked += marked
            else:
                tally.outside_sentences += 1
                tally.outside_marked += marked
    return tally


def judge(s: Sample, answer: str) -> float | None:
    """The share of the prompt's annotated constraints the answer meets (None: nothing to judge)."""
    verdicts = []
    for c in s.constraints:
        verdict = satisfied(c["kind"], c["args"], answer) if c["ifeval"] else check(c["kind"], c["args"], answer)
        if verdict is not None:
            verdicts.append(bool(verdict))
    return fmean(verdicts) if verdicts else None


def capture(rows: list[tuple[float, float, float]], resamples: int, seed: int) -> tuple[float, float, float, float]:
    """(pick − random) / (best − random) over prompts, its 95 % interval (both resampled together),
    and pick − random itself."""
    def ratio(sel: list[int]) -> float:
        top = sum(rows[i][2] - rows[i][1] for i in sel)
        return sum(rows[i][0] - rows[i][1] for i in sel) / top if top else float("nan")

    everything = list(range(len(rows)))
    rng = random.Random(seed)
    draws = sorted(r for r in (ratio([rng.randrange(len(rows)) for _ in rows]) for _ in range(resamples)) if r == r)
    if not draws:
        return float("nan"), float("nan"), float("nan"), 0.0
    return (ratio(everything), draws[int(0.025 * len(draws))], draws[int(0.975 * len(draws)) - 1],
            fmean(r[0] - r[1] for r in rows))


async def picks(samples: list[Sample], answers: Answers, consensus: bool) -> list[int]:
    reward = DefaultReward()
    scorer = build_scorer(reward)
    chosen = []
    for s in samples:
        texts = answers.by_key[s.key]
        scores = await scorer.score(s.prompt, texts)
        use = consensus and not await scorer.states_something_verifiable(s.prompt)
        chosen.append(select_best_candidates(list(scores), 1, texts if use else None,
                                             reward.tie_margin if use else 0.0)[0])
    return chosen


def picking(samples: list[Sample], args: argparse.Namespace) -> None:
    run = args.workdir / f"n{args.best_of}-t{args.max_tokens}-s{args.seed}"
    run.mkdir(parents=True, exist_ok=True)
    answers = Answers(run / "answers.jsonl")
    asyncio.run(sample_arm(samples, answers, args, None, args.best_of))
    with_consensus = asyncio.run(picks(samples, answers, consensus=True))
    reward_only = asyncio.run(picks(samples, answers, consensus=False))
    print(f"\nPicking: {args.best_of} answers of ≤{args.max_tokens} tokens per prompt (T=0.8, top_p=0.95); "
          "judged by the corpus's checker and IFEval's; 95 % bootstrap intervals over prompts")
    print(f"{'prompts':<44} {'n':>4} {'random':>7} {'pick':>6} {'best':>6} {'captured':>22} {'pick−random':>12}")
    for label, keep in (("all judged", lambda s, r: True), ("with outside-kind constraints", lambda s, r: s.outside),
                        ("outside kinds, detector read something", lambda s, r: s.outside and r),
                        ("outside kinds, detector read nothing", lambda s, r: s.outside and not r)):
        for name, chosen in (("", with_consensus), (" (reward only)", reward_only)):
            rows = []
            for s, pick in zip(samples, chosen):
                values = [judge(s, a) for a in answers.by_key[s.key]]
                if values[0] is None or not keep(s, bool(read_prompt(s.prompt).constraints)):
                    continue
                rows.append((values[pick], fmean(values), max(values)))
            if not rows:
                continue
            estimate, low, high, diff = capture(rows, args.resamples, args.seed)
            print(f"{label + name:<44} {len(rows):>4} {fmean(r[1] for r in rows):>7.3f} "
                  f"{fmean(r[0] for r in rows):>6.3f} {fmean(r[2] for r in rows):>6.3f} "
                  f"{estimate:>+7.0%} [{low:+.0%}, {high:+.0%}] {diff:>+12.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--corpus", type=Path, default=CORPUS, help="the annotated prompts (JSONL)")
    parser.add_argument("--show-errors", action="store_true", help="print every false, missed or misargued reading")
    parser.add_argument("--split", choices=("all", "odd", "even"), default="all",
                        help="prompts by id: the detector was tuned on the odd ones (after measuring all untuned)")
    parser.add_argument("--sample", action="store_true", help="also sample answers and measure the pick")
    parser.add_argument("--best-of", type=int, default=8, help="answers per prompt (N)")
    parser.add_argument("--max-tokens", type=int, default=256, help="the longest answer, in tokens")
    parser.add_argument("--seed", type=int, default=0, help="the sampling's and the bootstrap's seed")
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples")
    parser.add_argument("--workdir", type=Path, default=Path("bench/results/outside"),
                        help="where answers are kept (a rerun resumes from them)")
    args = parser.parse_args()
    samples = [s for s in load(args.corpus)
               if args.split == "all" or int(s.id.lstrip("o")) % 2 == (args.split == "odd")]
    tally = reading(samples, args.show_errors)
    readings = tally.true + tally.false
    groups = Counter(s.group for s in samples)
    print(f"Reading: {len(samples)} prompts ({', '.join(f'{g} {n}' for g, n in sorted(groups.items()))}); "
          f"{sum(s.outside for s in samples)} state an outside-kind constraint")
    print(f"  readings {readings}: of a stated kind {tally.true}, of no stated kind {tally.false} "
          f"(by group: {dict(tally.false_by_group)}); arguments right in {tally.args_right} of {tally.true}")
    print(f"  precision: kind {tally.true / max(readings, 1):.1%}; kind and arguments (read whole) "
          f"{tally.args_right / max(readings, 1):.1%}")
    stated = sum(c["ifeval"] for s in samples for c in s.constraints)
    print(f"  recall over {stated} IFEval-kind constraints: {(stated - tally.missed) / max(stated, 1):.1%}")
    print(f"  marked unverifiable: {tally.outside_marked} of {tally.outside_sentences} outside-kind constraint "
          f"sentences; {tally.ifeval_marked} IFEval-kind ones")
    if args.sample:
        picking(samples, args)


if __name__ == "__main__":
    main()
