"""Is bf16 worth it on this CPU? The two things a distill round spends its time on, fp32 against bf16,
alternated in one run on the embedded model.

    python -m bench.bf16 [--repeats 2]

- sampling: 8 prompts × 8 answers × 64 tokens in one left-padded generate call (a round's sampler
  call), with the weights in fp32 and in bf16 (`ModelConfig.dtype`);
- a training step: forward and backward of a fresh LoRA (r16 on all linear layers) on 8 × 112
  tokens, fp32, and under bf16 autocast over the same fp32 weights (what `distill.bf16` turns on).

Prints the best time of each and the ratio. bf16 pays only where the CPU runs it natively
(AVX512-BF16, AMX: `gateway.hardware.bf16_native`); elsewhere it is emulated and slower. Run it alone.
"""

from __future__ import annotations

import argparse
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from gateway.embedded import embedded_model_dir
from gateway.hardware import bf16_native
from tao.demo.prompts import generate_prompts


def sample_seconds(model, batch) -> float:
    torch.manual_seed(0)
    started = time.perf_counter()
    with torch.inference_mode():
        model.generate(**batch, do_sample=True, temperature=0.8, top_p=0.95, max_new_tokens=64, min_new_tokens=64)
    return time.perf_counter() - started


def train_step_seconds(base_dir, autocast: bool, steps: int) -> float:
    """Best of `steps` optimiser steps after one warm-up step."""
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir),
                           LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    tokens = torch.randint(0, model.config.vocab_size, (8, 112), generator=torch.Generator().manual_seed(0))
    times = []
    for _ in range(steps + 1):
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = model(input_ids=tokens, labels=tokens).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - started)
    return min(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2, help="alternated repeats of each measurement (default: 2)")
    opts = parser.parse_args()

    base_dir = embedded_model_dir()
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    tokenizer.padding_side = "left"
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
             for p in generate_prompts(8, seed=0)]
    batch = tokenizer([t for t in texts for _ in range(8)], return_tensors="pt", padding=True)
    models = {dtype: AutoModelForCausalLM.from_pretrained(base_dir, dtype=dtype).eval()
              for dtype in (torch.float32, torch.bfloat16)}
    sampling = {dtype: [] for dtype in models}
    for _ in range(opts.repeats):
        for dtype, model in models.items():
            sampling[dtype].append(sample_seconds(model, batch))
    training = {autocast: train_step_seconds(base_dir, autocast, steps=3 * opts.repeats) for autocast in (False, True)}

    print(f"bf16 native on this machine: {bf16_native()}")
    print("| | fp32 s | bf16 s | fp32 / bf16 |")
    print("|---|---|---|---|")
    fp32, bf16 = min(sampling[torch.float32]), min(sampling[torch.bfloat16])
    print(f"| sampling 8 prompts × 8 × 64 tokens (weights) | {fp32:.2f} | {bf16:.2f} | {fp32 / bf16:.2f}× |")
    print(f"| LoRA train step, 8 × 112 tokens (autocast) | {training[False]:.2f} | {training[True]:.2f} | "
          f"{training[False] / training[True]:.2f}× |")


if __name__ == "__main__":
    main()
