"""The eval gate: on held-out prompts, the new checkpoint at N=1 against the base at N=1.

Both are sampled the way the gateway serves (the model's temperature, top_p and max_tokens),
`eval_samples` times per prompt, with the same seeds, and scored by the gateway's scorer. The
logs add the reference points: the base model's N=1 (the first candidate of every logged request
is an unbiased N=1 sample) and its best-of-N (the logged winners) on the same prompts.

    gain recovered = (new N=1 − base N=1) / (logged best-of-N − logged N=1)

i.e. the share of the uplift best-of-N gave in production that the checkpoint now gives at N=1.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import mean

from tqdm.auto import tqdm

from distill.dataset import LoggedPrompt
from distill.train import load_base
from gateway.backends.local import answer_length
from gateway.config import ModelConfig
from gateway.protocol import ChatMessage, scored_prompt
from gateway.rewards import Scorer


@dataclass
class EvalReport:
    prompts: int
    samples_per_prompt: int
    base_n1_logged: float
    base_best_of_n_logged: float
    base_n1: float
    new_n1: float
    base_tokens_per_answer_logged: float  # all candidates of a best-of-N request
    new_tokens_per_answer: float

    @property
    def gain_recovered(self) -> float | None:
        uplift = self.base_best_of_n_logged - self.base_n1_logged
        return (self.new_n1 - self.base_n1) / uplift if uplift > 1e-9 else None

    def as_dict(self) -> dict[str, float | int | None]:
        return {**asdict(self), "gain_recovered": self.gain_recovered}


def _sample(model, tokenizer, prompts: list[LoggedPrompt], sampling: ModelConfig, samples: int, seed: int,
            label: str, batch_size: int = 8) -> list[list[tuple[str, int]]]:
    """`samples` completions per prompt: (text, generated tokens)."""
    import torch

    tokenizer.padding_side = "left"
    results: list[list[tuple[str, int]]] = []
    for start in tqdm(range(0, len(prompts), batch_size), desc=f"eval {label} N=1", unit="batch"):
        batch = prompts[start:start + batch_size]
        texts = [tokenizer.apply_chat_template(p.messages, add_generation_prompt=True, tokenize=False) for p in batch]
        inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        torch.manual_seed(seed + start)
        with torch.inference_mode():
            output = model.generate(**inputs, do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p,
                                    max_new_tokens=sampling.max_tokens, num_return_sequences=samples,
                                    pad_token_id=tokenizer.pad_token_id)
        generated = output[:, inputs["input_ids"].shape[1]:].tolist()
        for i in range(len(batch)):
            per_prompt = []
            for sequence in generated[i * samples:(i + 1) * samples]:
                end = answer_length(sequence, tokenizer)
                end = len(sequence) if end is None else end
                per_prompt.append((tokenizer.decode(sequence[:end], skip_special_tokens=True), end))
            results.append(per_prompt)
    return results


async def _score(scorer: Scorer, prompts: list[LoggedPrompt], outputs: list[list[tuple[str, int]]]) -> list[float]:
    scores = []
    for prompt, samples in zip(prompts, outputs):
        text = scored_prompt([ChatMessage.model_validate(m) for m in prompt.messages])
        scores.extend(await scorer.score(text, [t for t, _ in samples]))
    return scores


def evaluate(base_dir: Path, adapter_dir: Path, heldout: list[LoggedPrompt], scorer: Scorer,
             sampling: ModelConfig, samples: int, seed: int) -> EvalReport:
    import torch
    from peft import PeftModel

    base, tokenizer = load_base(base_dir)
    if torch.cuda.is_available():
        base = base.cuda()
    model = PeftModel.from_pretrained(base, adapter_dir).eval()
    with model.disable_adapter():
        base_out = _sample(model, tokenizer, heldout, sampling, samples, seed, "base")
    new_out = _sample(model, tokenizer, heldout, sampling, samples, seed, "new")
    base_scores = asyncio.run(_score(scorer, heldout, base_out))
    new_scores = asyncio.run(_score(scorer, heldout, new_out))
    logged_n1 = [p.n1_score for p in heldout if p.n1_score is not None]
    logged_best = [p.best_of_n_score for p in heldout if p.best_of_n_score is not None]
    logged_tokens = [t for p in heldout for t in p.completion_tokens]
    return EvalReport(
        prompts=len(heldout),
        samples_per_prompt=samples,
        base_n1_logged=mean(logged_n1) if logged_n1 else 0.0,
        base_best_of_n_logged=mean(logged_best) if logged_best else 0.0,
        base_n1=mean(base_scores),
        new_n1=mean(new_scores),
        base_tokens_per_answer_logged=mean(logged_tokens) if logged_tokens else 0.0,
        new_tokens_per_answer=mean(tokens for out in new_out for _, tokens in out),
    )
