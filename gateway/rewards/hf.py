"""A transformers sequence-classification reward model (Skywork-Reward-V2 style: the chat template
applied to prompt + candidate, score = the single logit), from a local directory.

Loaded once at startup; all N candidates are scored in one batched forward pass on one worker
thread (off the event loop), on the GPU when there is one. A text longer than `max_length` tokens
loses its start (left truncation, as vLLM's `truncate_prompt_tokens` does): the reply being scored
and the end of the prompt are kept, and a notice is logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from gateway.config import HFReward
from gateway.rewards.base import reward_model_input, validated

log = logging.getLogger(__name__)


class HFRewardModel:
    def __init__(self, config: HFReward) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        path = config.path
        if not Path(path).is_dir():
            raise ValueError(f"hf scorer: {path} is not a model directory (no hub access: give a local path)")
        self.name = f"hf:{Path(path).name}"
        self.max_length = config.max_length
        self.batch_size = config.batch_size
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "right"
        self.tokenizer.truncation_side = "left"  # keep the reply: cut the start of the prompt
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        self.model = AutoModelForSequenceClassification.from_pretrained(path, dtype=dtype).to(self.device).eval()
        self.model.config.pad_token_id = self.tokenizer.pad_token_id  # where the last real token is
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hf-reward")

    async def states_something_verifiable(self, prompt: str) -> bool:
        return True  # it scores every prompt alike: the reward alone ranks

    def score_blocking(self, prompt: str, candidates: Sequence[str]) -> list[float]:
        import torch

        scores: list[float] = []
        texts = [reward_model_input(self.tokenizer, prompt, c) for c in candidates]
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(texts[start:start + self.batch_size], return_tensors="pt", padding=True,
                                   truncation=True, max_length=self.max_length, add_special_tokens=False)
            cut = int((batch["attention_mask"].sum(dim=1) >= self.max_length).sum())
            if cut:
                log.info("%s: %d of %d texts reached max_length %d tokens and were cut at their start", self.name,
                         cut, len(batch["input_ids"]), self.max_length)
            with torch.inference_mode():
                logits = self.model(**batch.to(self.device)).logits
            scores.extend(float(x) for x in logits[:, 0].float().cpu())
        return scores

    async def score(self, prompt: str, candidates: Sequence[str]) -> list[float]:
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(self._executor, self.score_blocking, prompt, list(candidates))
        return validated(result, len(candidates), self.name)
