"""The reward model served by a vLLM server (pooling runner): all N candidates in ONE HTTP call.

`endpoint: classify` (default) posts `{"model", "input": [texts]}` to `/classify` and reads
`data[i].probs[label_index]`; with a single-logit reward model vLLM applies a sigmoid, which keeps
the ranking. `endpoint: pooling` posts to `/pooling` and reads the last value of `data[i].data`.
Texts are `prompt + "\\n\\n" + candidate`, or the chat template of a local `tokenizer` directory.
`truncate_prompt_tokens` (default -1: the model's own maximum) is sent with each call, so vLLM keeps
the last tokens of a text longer than its context (the reply and the end of the prompt) instead
of refusing it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx

from gateway.config import VLLMReward
from gateway.rewards.base import ScorerOutputError, reward_model_input, validated


def _last_number(value: Any) -> float:
    while isinstance(value, list):
        value = value[-1]
    return float(value)


class VLLMRewardScorer:
    def __init__(self, config: VLLMReward) -> None:
        self.name = f"vllm:{config.model}"
        self.config = config
        self.url = config.api_base.rstrip("/").removesuffix("/v1") + "/" + config.endpoint
        self.headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
        self._tokenizer = None
        if config.tokenizer:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(config.tokenizer)

    async def states_something_verifiable(self, prompt: str) -> bool:
        return True  # it scores every prompt alike: the reward alone ranks

    async def score(self, prompt: str, candidates: Sequence[str]) -> list[float]:
        config = self.config
        body: dict[str, Any] = {"model": config.model,
                                "input": [reward_model_input(self._tokenizer, prompt, c) for c in candidates]}
        if config.truncate_prompt_tokens is not None:
            body["truncate_prompt_tokens"] = config.truncate_prompt_tokens
        async with httpx.AsyncClient(timeout=config.timeout_s) as client:
            response = await client.post(self.url, json=body, headers=self.headers)
        if response.status_code != 200:
            raise ScorerOutputError(f"vllm scorer: HTTP {response.status_code}: {response.text[:200]}")
        try:
            rows = sorted(response.json()["data"], key=lambda row: row["index"])
            if config.endpoint == "classify":
                scores = [float(row["probs"][config.label_index]) for row in rows]
            else:
                scores = [_last_number(row["data"]) for row in rows]
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise ScorerOutputError(f"vllm scorer: unexpected response {response.text[:200]}") from exc
        return validated(scores, len(candidates), self.name)
