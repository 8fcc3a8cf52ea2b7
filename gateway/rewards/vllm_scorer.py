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
from typing import Any, Literal

import httpx

from gateway.rewards.base import ScorerOutputError, reward_model_input, validated


def _last_number(value: Any) -> float:
    while isinstance(value, list):
        value = value[-1]
    return float(value)


class VLLMRewardScorer:
    def __init__(self, api_base: str, model: str, endpoint: Literal["classify", "pooling"] = "classify",
                 label_index: int = 0, tokenizer: str | None = None, api_key: str | None = None,
                 timeout_s: float = 30.0, truncate_prompt_tokens: int | None = -1) -> None:
        if endpoint not in ("classify", "pooling"):
            raise ValueError(f"vllm scorer endpoint must be classify or pooling, got {endpoint!r}")
        self.name = f"vllm:{model}"
        self.url = api_base.rstrip("/").removesuffix("/v1") + "/" + endpoint
        self.model, self.endpoint, self.label_index = model, endpoint, label_index
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout_s = timeout_s
        self.truncate_prompt_tokens = truncate_prompt_tokens
        self._tokenizer = None
        if tokenizer:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(tokenizer)

    async def score(self, prompt: str, candidates: Sequence[str]) -> list[float]:
        body: dict[str, Any] = {"model": self.model,
                                "input": [reward_model_input(self._tokenizer, prompt, c) for c in candidates]}
        if self.truncate_prompt_tokens is not None:
            body["truncate_prompt_tokens"] = self.truncate_prompt_tokens
        async with httpx.AsyncClient(timeout=self.timeout_s) as client:
            response = await client.post(self.url, json=body, headers=self.headers)
        if response.status_code != 200:
            raise ScorerOutputError(f"vllm scorer: HTTP {response.status_code}: {response.text[:200]}")
        try:
            rows = sorted(response.json()["data"], key=lambda row: row["index"])
            if self.endpoint == "classify":
                scores = [float(row["probs"][self.label_index]) for row in rows]
            else:
                scores = [_last_number(row["data"]) for row in rows]
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise ScorerOutputError(f"vllm scorer: unexpected response {response.text[:200]}") from exc
        return validated(scores, len(candidates), self.name)
