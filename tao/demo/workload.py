"""Send a prompt workload through a running gateway with the OpenAI SDK, concurrently, with a
progress bar. Used by the demo and the distill benchmark to fill the log with best-of-N traffic."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from openai import AsyncOpenAI
from tqdm.auto import tqdm


@dataclass
class WorkloadResult:
    prompt: str
    request_id: str | None
    text: str | None
    error: str | None = None
    arm: str | None = None  # the rollout arm that answered
    completion_tokens: int = 0  # every candidate's, as the reply's usage counts them


async def _send(base_url: str, api_key: str, model: str, prompts: list[str], best_of: int | None, concurrency: int,
                max_tokens: int | None, desc: str, user: str | None) -> list[WorkloadResult]:
    client = AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=600)
    gate = asyncio.Semaphore(concurrency)
    bar = tqdm(total=len(prompts), desc=desc, unit="prompt")

    async def one(i: int, prompt: str) -> WorkloadResult:
        async with gate:
            try:
                extra = {"max_tokens": max_tokens} if max_tokens else {}
                if best_of is not None:
                    extra["extra_body"] = {"best_of": best_of}
                reply = await client.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": prompt}], user=f"{user or 'workload'}-{i}",
                    **extra)
                tao = reply.model_extra["tao"]
                return WorkloadResult(prompt, tao["request_id"], reply.choices[0].message.content, arm=tao["arm"],
                                      completion_tokens=reply.usage.completion_tokens if reply.usage else 0)
            except Exception as exc:  # noqa: BLE001 - recorded per prompt; the workload goes on
                return WorkloadResult(prompt, None, None, f"{type(exc).__name__}: {exc}")
            finally:
                bar.update(1)

    try:
        return await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts)))
    finally:
        bar.close()
        await client.close()


def send_workload(base_url: str, model: str, prompts: list[str], *, best_of: int | None, concurrency: int = 4,
                  max_tokens: int | None = None, api_key: str = "tao", desc: str = "workload",
                  user: str | None = None) -> list[WorkloadResult]:
    """Every prompt once, at `best_of` (None: the gateway's default for the user's arm), as user
    `<user>-<index>`; failures are returned, not raised."""
    return asyncio.run(_send(base_url, api_key, model, prompts, best_of, concurrency, max_tokens, desc, user))
