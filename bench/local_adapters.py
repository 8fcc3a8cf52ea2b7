"""How should the local backend serve a LoRA adapter? The four ways, alternated in one run on the
embedded model, each generating the same batch.

    python -m bench.local_adapters [--repeats 2] [--adapter DIR]

- base: the plain weights (no adapter loaded anywhere);
- LoRA layers: PEFT's wrapper with the adapter active (how the backend served adapters before);
- base under PEFT: the same wrapper with the adapter disabled (how base requests ran during a rollout);
- merged copy: the adapter merged into a copy of the weights (`gateway.backends.local.model.merged_copy`,
  how the backend serves adapters now).

The batch is a best-of-4 generate call of 16 prompts (64 rows) × 48 tokens, sampled in bf16 where
the CPU runs it natively, as the demo serves. The adapter defaults to a random one shaped like
distill's (r16 on all linear layers, B not zero): speed does not depend on what it learnt. Run it alone.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from rich.console import Console
from rich.table import Table
from transformers import AutoModelForCausalLM, AutoTokenizer

from gateway.backends.local.model import merged_copy
from gateway.embedded import embedded_model_dir
from gateway.hardware import resolve_dtype
from tao.demo.prompts import generate_prompts

PROMPTS, N, TOKENS = 16, 4, 48


def random_adapter(base_dir: Path, out: Path) -> Path:
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir),
                           LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.02)
    model.save_pretrained(out)
    return out


def tokens_per_second(model, batch, pad_id: int) -> float:
    torch.manual_seed(0)
    started = time.perf_counter()
    with torch.inference_mode():
        model.generate(**batch, do_sample=True, temperature=0.8, top_p=0.95, max_new_tokens=TOKENS,
                       min_new_tokens=TOKENS, num_return_sequences=N, pad_token_id=pad_id)
    return PROMPTS * N * TOKENS / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2, help="Rounds of the four ways, alternated (best kept).")
    parser.add_argument("--adapter", type=Path, help="A LoRA adapter directory for the embedded model.")
    args = parser.parse_args()

    base_dir = embedded_model_dir()
    dtype = getattr(torch, resolve_dtype("auto"))
    adapter = args.adapter or random_adapter(base_dir, Path(tempfile.mkdtemp()) / "adapter")
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    tokenizer.padding_side = "left"
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
             for p in generate_prompts(PROMPTS, seed=0)]
    batch = tokenizer(texts, return_tensors="pt", padding=True)

    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=dtype).eval()
    merged = merged_copy(base, str(adapter))
    wrapped = PeftModel.from_pretrained(copy.deepcopy(base), str(adapter)).eval()

    def base_under_peft(b):
        with wrapped.disable_adapter():
            return tokens_per_second(wrapped, b, tokenizer.pad_token_id)

    ways = {"base": lambda b: tokens_per_second(base, b, tokenizer.pad_token_id),
            "LoRA layers (PEFT, adapter active)": lambda b: tokens_per_second(wrapped, b, tokenizer.pad_token_id),
            "base under PEFT (adapter disabled)": base_under_peft,
            "merged copy (served now)": lambda b: tokens_per_second(merged, b, tokenizer.pad_token_id)}
    small = {k: v[:2] for k, v in batch.items()}
    for way in ways.values():  # warm-up
        way(small)
    best = {name: 0.0 for name in ways}
    for _ in range(args.repeats):
        for name, way in ways.items():
            best[name] = max(best[name], way(batch))

    table = Table(title=f"local adapters: best-of-{N}, {PROMPTS} prompts × {TOKENS} tokens, {dtype}, "
                        f"best of {args.repeats}")
    for column in ("way", "tokens/s", "× base"):
        table.add_column(column, justify="left" if column == "way" else "right")
    for name, rate in best.items():
        table.add_row(name, f"{rate:.1f}", f"{rate / best['base']:.2f}")
    Console().print(table)


if __name__ == "__main__":
    main()
