"""The bake judged from outside: IFEval's prompts, IFEval's own checker, our scorer only picking.

    python -m bench.ifeval --data input_data.jsonl [--prompts 120] [--best-of 8] [--adapter DIR]

The prompts are IFEval's 541 (google-research/google-research,
`instruction_following_eval/data/input_data.jsonl`, Apache-2.0; not in this repository: pass its
path). They are never trained on. The judge is the checker in `if-verifiable` (IFEval's code), with
each prompt's own arguments: the four standard numbers, prompt- and instruction-level, strict and
loose. Our scorer never judges here; it only picks.

Arms, each at N=1 as a client sees it:
- **base**: the embedded SmolLM2, one sample; measured as the mean over all `--best-of` samples of a
  prompt (the same expectation, less noise);
- **best-of-N**: the gateway's pick among those samples (the configured scorer, with the gateway's
  near-tie consensus where the prompt states nothing it verifies);
- **oracle**: any of the N samples passes (the headroom a perfect picker would have);
- **distilled** (with `--adapter`): the adapter's samples, as the base's.

One part of the checker needs data this machine cannot download: NLTK's English Punkt model (for
sentence counts and IFEval's word tokenizer in the capital-words check). The bench gives NLTK an
untrained Punkt model instead (`untrained_punkt`): the same algorithm without its learned list of
abbreviations, so "Mr. Smith" counts as two sentences where IFEval's English model counts one.
That touches 52 prompts' `number_sentences` and 25 `capital_word_frequency` checks, and only where an
answer has such an abbreviation.

Every number has a 95 % bootstrap interval over prompts (`--resamples`), and best-of-N and the
distilled arm are compared with base on the same prompts (paired). Samples are written to
`--workdir` as they are made: a killed run started again with the same arguments goes on from
where it stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean
from typing import Any

from rich.console import Console
from rich.table import Table
from tqdm import tqdm

from distill.dataset import LoggedPrompt
from distill.sampling import PolicySampler
from gateway.bestofn.selection import select_best_candidates
from gateway.config import DefaultReward, default_models, with_updates
from gateway.embedded import embedded_model_dir
from gateway.rewards import build_scorer

log = logging.getLogger("bench.ifeval")
METRICS = ("prompt_strict", "inst_strict", "prompt_loose", "inst_loose")
ADAPTER = "distilled"


@dataclass(frozen=True)
class Sample:
    """One IFEval prompt: its key, text, instruction ids and their arguments (IFEval's own)."""

    key: int
    prompt: str
    instruction_id_list: list[str]
    kwargs: list[dict[str, Any]]


def load_samples(path: Path) -> list[Sample]:
    """IFEval's input_data.jsonl; a line in another format stops the bench, naming the line."""
    samples = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            sample = Sample(key=int(row["key"]), prompt=str(row["prompt"]),
                            instruction_id_list=list(row["instruction_id_list"]), kwargs=list(row["kwargs"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise SystemExit(f"{path}:{number}: not an IFEval input line (key, prompt, instruction_id_list, kwargs): "
                             f"{type(exc).__name__}: {exc}") from None
        if len(sample.kwargs) != len(sample.instruction_id_list):
            raise SystemExit(f"{path}:{number}: {len(sample.instruction_id_list)} instruction ids but "
                             f"{len(sample.kwargs)} kwargs")
        samples.append(sample)
    if not samples:
        raise SystemExit(f"{path}: no prompts")
    return samples


def checkable(samples: list[Sample]) -> tuple[list[Sample], dict[str, int]]:
    """The samples whose every instruction the checker knows, and the count of each unknown kind."""
    from if_verifiable.ifeval.instructions_registry import INSTRUCTION_DICT

    unknown: dict[str, int] = {}
    kept = []
    for sample in samples:
        missing = [i for i in sample.instruction_id_list if i not in INSTRUCTION_DICT]
        for kind in missing:
            unknown[kind] = unknown.get(kind, 0) + 1
        if not missing:
            kept.append(sample)
    return kept, unknown


def untrained_punkt(directory: Path) -> None:
    """Make NLTK find an untrained English Punkt model (empty parameters) in `directory`: the trained one
    is a download (see the module docstring for what that changes)."""
    import pickle

    import nltk
    from nltk.tokenize.punkt import PunktSentenceTokenizer

    tab = directory / "tokenizers" / "punkt_tab" / "english"
    tab.mkdir(parents=True, exist_ok=True)
    for name in ("collocations.tab", "sent_starters.txt", "abbrev_types.txt", "ortho_context.tab"):
        (tab / name).touch()
    (directory / "tokenizers" / "punkt").mkdir(parents=True, exist_ok=True)
    with (directory / "tokenizers" / "punkt" / "english.pickle").open("wb") as f:
        pickle.dump(PunktSentenceTokenizer(), f)
    nltk.data.path.insert(0, str(directory))


def judge(sample: Sample, answer: str) -> dict[str, Any]:
    """IFEval's verdicts on one answer: prompt-level (all instructions) and per instruction, strict and loose."""
    from if_verifiable.api import evaluate_output_for_sample
    from if_verifiable.types import IFEvalSample

    kwargs = [{k: v for k, v in kw.items() if v is not None} for kw in sample.kwargs]
    results, _ = evaluate_output_for_sample("ifeval", IFEvalSample(
        key=sample.key, prompt=sample.prompt, instruction_id_list=sample.instruction_id_list, kwargs=kwargs), answer)
    strict = [r.strict_pass for r in results]
    loose = [r.loose_pass for r in results]
    return {"prompt_strict": float(all(strict)), "prompt_loose": float(all(loose)),
            "strict": strict, "loose": loose}


def arm_values(verdicts: list[list[dict[str, Any]]]) -> list[dict[str, tuple[float, float]]]:
    """Per prompt, for each metric: (numerator, denominator). A prompt's several samples are averaged
    (the expectation at N=1); instruction-level metrics pool instructions, as IFEval does."""
    out = []
    for per_sample in verdicts:
        k = len(per_sample)
        out.append({
            "prompt_strict": (fmean(v["prompt_strict"] for v in per_sample), 1.0),
            "prompt_loose": (fmean(v["prompt_loose"] for v in per_sample), 1.0),
            "inst_strict": (sum(sum(v["strict"]) for v in per_sample) / k, float(len(per_sample[0]["strict"]))),
            "inst_loose": (sum(sum(v["loose"]) for v in per_sample) / k, float(len(per_sample[0]["loose"]))),
        })
    return out


def ratio(values: list[dict[str, tuple[float, float]]], metric: str, rows: list[int]) -> float:
    return sum(values[i][metric][0] for i in rows) / sum(values[i][metric][1] for i in rows)


def bootstrap(arms: dict[str, list[dict[str, tuple[float, float]]]], resamples: int,
              seed: int) -> dict[str, dict[str, tuple[float, float, float]]]:
    """(estimate, 2.5 %, 97.5 %) per arm and metric, and per arm minus base (paired: the same resampled prompts)."""
    prompts = len(next(iter(arms.values())))
    rng = random.Random(seed)
    draws = [[rng.randrange(prompts) for _ in range(prompts)] for _ in range(resamples)]
    everything = list(range(prompts))
    out: dict[str, dict[str, tuple[float, float, float]]] = {}
    for name, values in arms.items():
        for metric in METRICS:
            stats = sorted(ratio(values, metric, rows) for rows in draws)
            out.setdefault(name, {})[metric] = (ratio(values, metric, everything), stats[int(0.025 * resamples)],
                                                stats[int(0.975 * resamples) - 1])
            if name != "base":
                diffs = sorted(ratio(values, metric, rows) - ratio(arms["base"], metric, rows) for rows in draws)
                estimate = out[name][metric][0] - ratio(arms["base"], metric, everything)
                out.setdefault(f"{name} − base", {})[metric] = (estimate, diffs[int(0.025 * resamples)],
                                                                 diffs[int(0.975 * resamples) - 1])
    return out


def share(arms: dict[str, list[dict[str, tuple[float, float]]]], top: str, over: str, metric: str,
          resamples: int, seed: int) -> tuple[float, float, float, int]:
    """(top − base) / (over − base) on `metric`, with a 95 % bootstrap interval in which numerator and
    denominator are resampled together (the denominator's own uncertainty is in it), and how many
    resamples had a denominator above zero (the others have no ratio)."""
    prompts = len(arms["base"])
    rng = random.Random(seed + 1)
    everything = list(range(prompts))

    def gain(name: str, rows: list[int]) -> float:
        return ratio(arms[name], metric, rows) - ratio(arms["base"], metric, rows)

    values = []
    for _ in range(resamples):
        rows = [rng.randrange(prompts) for _ in range(prompts)]
        if (denominator := gain(over, rows)) > 0:
            values.append(gain(top, rows) / denominator)
    values.sort()
    if not values:
        return float("nan"), float("nan"), float("nan"), 0
    return (gain(top, everything) / gain(over, everything), values[int(0.025 * len(values))],
            values[int(0.975 * len(values)) - 1], len(values))


class Answers:
    """Sampled answers of one arm, appended to a JSONL file as they come (a restarted run reads them back)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.by_key: dict[int, list[str]] = {}
        if path.exists():
            for line in path.read_text().splitlines():
                row = json.loads(line)
                self.by_key[int(row["key"])] = row["answers"]

    def add(self, key: int, answers: list[str]) -> None:
        self.by_key[key] = answers
        with self.path.open("a") as f:
            f.write(json.dumps({"key": key, "answers": answers}, ensure_ascii=False) + "\n")


async def sample_arm(samples: list[Sample], answers: Answers, args: argparse.Namespace, adapter: Path | None,
                     per_prompt: int) -> None:
    """`per_prompt` answers per prompt not yet in `answers`, from the base weights or the adapter."""
    todo = [s for s in samples if s.key not in answers.by_key]
    if not todo:
        return
    sampling = with_updates(default_models()[0], max_tokens=args.max_tokens)
    scorer = build_scorer(DefaultReward())  # the sampler scores; this bench reads only the texts
    adapters = {ADAPTER: adapter} if adapter else {}
    async with PolicySampler(embedded_model_dir(), sampling, scorer, adapters) as sampler:
        prompts = [LoggedPrompt(key=str(s.key), messages=[{"role": "user", "content": s.prompt}], prompt_text=s.prompt)
                   for s in todo]
        by_key = {str(s.key): s for s in todo}
        with tqdm(total=len(todo), desc=f"{'distilled' if adapter else 'base'}: {per_prompt} answers per prompt",
                  unit="prompt") as progress:
            for i, chunk in enumerate(sampler.chunks(prompts, per_prompt)):
                got = await sampler.answers(chunk, per_prompt, args.seed * 1000 + i, ADAPTER if adapter else None)
                for prompt, texts in zip(chunk, got):
                    answers.add(by_key[prompt.key].key, [a.text for a in texts])
                progress.update(len(chunk))


async def picks(samples: list[Sample], answers: Answers) -> list[int]:
    """The gateway's pick among each prompt's answers: the default scorer's top reward, near-ties by
    consensus where the prompt states nothing it verifies (`PoolScoring.select`)."""
    reward = DefaultReward()
    scorer = build_scorer(reward)
    chosen = []
    for sample in tqdm(samples, desc="best-of-N: the scorer picks", unit="prompt"):
        texts = answers.by_key[sample.key]
        scores = await scorer.score(sample.prompt, texts)
        consensus = not await scorer.states_something_verifiable(sample.prompt)
        chosen.append(select_best_candidates(list(scores), 1, texts if consensus else None,
                                             reward.tie_margin if consensus else 0.0)[0])
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="IFEval's input_data.jsonl")
    parser.add_argument("--prompts", type=int, default=0, help="a random subset of this many prompts (0: all)")
    parser.add_argument("--best-of", type=int, default=8, help="answers per prompt (N)")
    parser.add_argument("--max-tokens", type=int, default=256, help="the longest answer, in tokens")
    parser.add_argument("--seed", type=int, default=0, help="the subset's and the sampling's seed")
    parser.add_argument("--adapter", type=Path, help="a distilled adapter directory: adds the distilled arm")
    parser.add_argument("--adapter-samples", type=int, default=4,
                        help="answers per prompt from the adapter (its N=1 is their mean, as base's)")
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples for the intervals")
    parser.add_argument("--workdir", type=Path, default=Path("bench/results/ifeval"),
                        help="where answers and the results are kept (a rerun resumes from them)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    untrained_punkt(args.workdir / "nltk_data")
    import langdetect  # IFEval's language check: unseeded, the same answer can get two verdicts

    langdetect.DetectorFactory.seed = 0
    samples, unknown = checkable(load_samples(args.data))
    if unknown:
        print(f"left out: {sum(unknown.values())} instructions of kinds the checker lacks: {unknown}", file=sys.stderr)
    if args.prompts:
        samples = sorted(random.Random(args.seed).sample(samples, min(args.prompts, len(samples))), key=lambda s: s.key)
    run = args.workdir / f"n{args.best_of}-t{args.max_tokens}-s{args.seed}-p{len(samples)}"
    run.mkdir(parents=True, exist_ok=True)

    base = Answers(run / "base.jsonl")
    asyncio.run(sample_arm(samples, base, args, None, args.best_of))
    chosen = asyncio.run(picks(samples, base))
    verdicts = [[judge(s, text) for text in base.by_key[s.key]] for s in tqdm(samples, desc="IFEval judges", unit="prompt")]
    arms = {"base": arm_values(verdicts),
            f"best-of-{args.best_of}": arm_values([[v[c]] for v, c in zip(verdicts, chosen)]),
            "oracle": arm_values([[max(v, key=lambda x: (x["prompt_strict"], sum(x["strict"])))] for v in verdicts])}
    if args.adapter:
        distilled = Answers(run / f"distilled-{args.adapter.resolve().parent.name}-{args.adapter_samples}.jsonl")
        asyncio.run(sample_arm(samples, distilled, args, args.adapter, args.adapter_samples))
        arms["distilled"] = arm_values([[judge(s, t) for t in distilled.by_key[s.key]] for s in samples])
    results = bootstrap(arms, args.resamples, args.seed)

    table = Table(title=f"IFEval on {len(samples)} prompts, judged by IFEval's checker (95 % bootstrap intervals; "
                        f"{args.best_of} answers of ≤{args.max_tokens} tokens per prompt, T=0.8, top_p=0.95)")
    table.add_column("arm (at N=1)")
    for metric in METRICS:
        table.add_column(metric.replace("_", " "), justify="right")
    for name, values in results.items():
        table.add_row(name, *(f"{v:+.3f} [{lo:+.3f}, {hi:+.3f}]" if "−" in name else f"{v:.3f} [{lo:.3f}, {hi:.3f}]"
                              for v, lo, hi in (values[m] for m in METRICS)))
    Console(width=160).print(table)
    best = f"best-of-{args.best_of}"
    ratios = [(f"{best}: share of the oracle's headroom over base", best, "oracle")]
    if "distilled" in arms:
        ratios.append((f"distilled: share of the {best} gain recovered", "distilled", best))
    for label, top, over in ratios:
        estimate, low, high, kept = share(arms, top, over, "prompt_strict", args.resamples, args.seed)
        results[label] = {"prompt_strict": (estimate, low, high)}
        print(f"{label} (prompt strict): {estimate:.0%} [{low:.0%}, {high:.0%}] "
              f"({kept} of {args.resamples} resamples had a positive denominator)")
    base_avg = (results["base"]["prompt_strict"][0] + results["base"]["inst_strict"][0]) / 2
    print(f"base: average of prompt- and instruction-level strict accuracy {base_avg:.3f} (the model card reports "
          "29.9 for the original SmolLM2-135M-Instruct weights; we serve a dequantized Q4_1 GGUF)")
    (run / "results.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                  "prompts": len(samples), "unknown_kinds": unknown,
                                                  "results": results}, indent=2))
    print(f"answers and results: {run}")


if __name__ == "__main__":
    main()
