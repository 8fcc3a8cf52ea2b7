"""All settings in one pydantic-settings model: a `tao.yaml` file, overridden by `TAO_` env vars.

Nested keys use `__` in env vars (`TAO_STORE__PATH=/data/tao.db`); lists are JSON
(`TAO_AUTH__API_KEYS='["k1"]'`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

EMBEDDED_MODEL = "embedded:smollm2"
EMBEDDED_NAME = "smollm2"  # the public name the embedded model is served (and distilled) under
DistillStage = Literal["dpo", "grpo", "sft"]  # one training function each in distill/train.py
DistillMethod = Literal["dpo", "grpo", "sft", "sft+dpo"]  # a stage, or stages run in turn on one adapter
DpoPairing = Literal["lowest", "length_balanced", "spread", "quantile"]  # how DPO pairs a prompt's samples
RoundRejected = Literal["pooled", "policy"]  # which candidates an iterated round's DPO pairs may reject
WeightDtype = Literal["auto", "float32", "bfloat16"]  # the local backend's weights; auto: gateway.hardware decides


class AdaptiveConfig(BaseModel):
    """Adaptive N: sample `first` candidates; draw the rest of best_of only when they disagree."""

    model_config = ConfigDict(extra="forbid")

    first: int = Field(2, ge=1, description="Candidates in the first batch.")
    spread: float = Field(0.1, ge=0, description="Draw more only when max - min of the first scores exceeds this.")
    good_enough: float | None = Field(None, description="... and the best first score is below this.")

    def uncertain(self, scores: list[float | None]) -> bool:
        known = [s for s in scores if s is not None]
        if len(known) < 2:
            return True
        if self.good_enough is not None and max(known) >= self.good_enough:
            return False
        return max(known) - min(known) > self.spread


class ModelConfig(BaseModel):
    """One public model name and how to generate for it."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Public name clients send as `model`.")
    backend: Literal["litellm", "local"] = "litellm"
    model: str = Field(
        description="LiteLLM model string (`openai/gpt-4o-mini`, `hosted_vllm/x`), or for the local "
        f"backend a transformers directory or `{EMBEDDED_MODEL}`."
    )
    api_base: str | list[str] | None = Field(
        None, description="The server's OpenAI-compatible base URL (`http://vllm:8000/v1`), or a list of servers "
        "of the same weights (replicas): each call goes to the one with the fewest calls outstanding, and a failing "
        "one is taken out until it answers again (docs/operations/vllm.md).")
    replica_cooldown_s: float = Field(5.0, gt=0, description="How often a server that failed (or was down at start) "
                                      "is probed; it takes traffic again once it answers.")
    api_key: str | None = None
    adapter: str | None = Field(None, description="Local backend: a PEFT LoRA adapter directory.")
    version: str | None = Field(None, description="Label logged as model_version; derived if unset.")
    best_of: int = Field(1, ge=1, description="Default N when the request does not say.")
    log_requests: bool = Field(True, description="False: this model's requests are counted in the metrics "
                               "but not logged (so never distilled), e.g. for traffic that must not be stored.")
    max_best_of: int = Field(16, ge=1, description="Largest N a request may ask for (400 past it).")
    temperature: float = 0.8
    top_p: float = 0.95
    max_tokens: int = Field(256, ge=1)
    dtype: WeightDtype = Field(
        "auto", description="Local backend: the weights' dtype. auto: bfloat16 where the hardware runs it natively (a"
                            " GPU, or a CPU with AVX512-BF16 or AMX), float32 elsewhere; bfloat16 is faster at "
                            "slightly different numerics (docs/benchmarks). The distill job's round sampler uses it "
                            "when distill.bf16 is on.")
    max_batch_sequences: int = Field(64, ge=1, description="Local backend: most sequences in one generate call. "
                                     "Requests queued while the model works, with the same sampling settings and "
                                     "adapter and no seed, share the next call (bench/local_batching.py).")
    timeout_s: float = Field(60.0, gt=0, description="Per upstream call that is not streamed: the whole answer.")
    first_token_timeout_s: float | None = Field(None, gt=0, description="Streamed calls: time to the first "
                                                "token (default: timeout_s).")
    stream_idle_timeout_s: float = Field(30.0, gt=0, description="Streamed calls: longest gap between two chunks.")
    stream_timeout_s: float = Field(600.0, gt=0, description="Streamed calls: the whole stream, however lively.")
    num_retries: int = Field(2, ge=0, description="Retries per upstream call after a retryable failure "
                             "(connection errors, 408, 409, 429, 5xx), with exponential backoff; counted in "
                             "tao_upstream_retries_total.")
    transport: Literal["auto", "litellm", "direct"] = Field(
        "auto",
        description="litellm backend: `direct` posts to an OpenAI-compatible api_base with one pooled "
        "HTTP session (openai/ and hosted_vllm/ models only); `litellm` always calls LiteLLM; `auto` "
        "picks direct where it applies.",
    )
    adaptive: AdaptiveConfig | None = Field(
        None, description="Adaptive N (off by default): spend candidates only where the scores disagree.")
    n_strategy: Literal["auto", "native", "fanout"] = Field(
        "auto",
        description="auto: ask for all N in one call, fan out the rest if the provider returns fewer; "
        "native: one call with n=N; fanout: N concurrent calls with n=1.",
    )

    @model_validator(mode="after")
    def _default_within_max(self) -> ModelConfig:
        if self.best_of > self.max_best_of:
            raise ValueError(f"best_of {self.best_of} exceeds max_best_of {self.max_best_of}")
        return self

    @field_validator("api_base")
    @classmethod
    def _replicas_listed_once(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list):
            if not value:
                raise ValueError("api_base is an empty list: give one server URL or several")
            if len(set(value)) != len(value):
                raise ValueError(f"api_base lists a server twice: {value}")
        return value

    @property
    def api_bases(self) -> list[str]:
        """The model's servers: none for a provider LiteLLM knows by name, one or more (replicas) otherwise."""
        if self.api_base is None:
            return []
        return [self.api_base] if isinstance(self.api_base, str) else list(self.api_base)


class ReadWindow(BaseModel):
    """How much of a request a scorer reads (gateway/rewards/reading.py): the start and the end of
    the prompt and of each candidate; the middle of a longer text is skipped and counted."""

    model_config = ConfigDict(extra="forbid")

    prompt_head_chars: int = Field(8192, ge=0, description="Characters read from the start of the prompt "
                                   "(the system message comes first).")
    prompt_tail_chars: int = Field(8192, ge=0, description="Characters read from the end of the prompt "
                                   "(the last user turn).")
    candidate_head_chars: int = Field(32768, ge=1, description="Characters read from the start of each candidate.")
    candidate_tail_chars: int = Field(4096, ge=0, description="Characters read from the end of each candidate "
                                      "(closing phrases, a P.S.).")


class ScorerSettings(BaseModel):
    """What every scorer kind shares: its weight in an ensemble, its time budget, near-ties and the
    read window. `timeout_s`, `tie_margin` and `read` are the top-level scorer's (an ensemble's
    members score within the ensemble's)."""

    model_config = ConfigDict(extra="forbid")

    weight: float = Field(1.0, description="Weight inside an ensemble.")
    timeout_s: float = Field(10.0, gt=0, description="Scoring slower than this degrades the reply, and the work "
                             "is stopped; also the time a judge or vLLM scorer gives one HTTP call.")
    tie_margin: float = Field(0.05, ge=0, description="On prompts that state nothing the scorer can verify (the "
                              "default scorer says so), candidates within this of the best reward are near-ties: the "
                              "one most similar to the others (consensus, MBR) is served. Rewards are unchanged and "
                              "rollouts compare best-candidate rewards. 0: ties keep generation order.")
    read: ReadWindow = Field(default_factory=ReadWindow, description="How much of each prompt and candidate the "
                             "scorer reads.")


class DefaultReward(ScorerSettings):
    """The offline instruction-following scorer: IFEval's checks on the instructions the prompt states
    (gateway/rewards/default.py)."""

    kind: Literal["default"] = "default"


class PythonReward(ScorerSettings):
    """Your own function, importable as `module:function(prompt, candidates) -> list[float]`."""

    kind: Literal["python"] = "python"
    function: str = Field(description="`module:function`, called with the prompt text and the candidate texts.")


class EnsembleReward(ScorerSettings):
    """A weighted sum of other scorers, run concurrently; any member failing fails the ensemble."""

    kind: Literal["ensemble"] = "ensemble"
    members: list[RewardConfig] = Field(min_length=1, description="The scorers to add up, each with its `weight`.")


class HFReward(ScorerSettings):
    """A transformers sequence-classification reward model from a local directory."""

    kind: Literal["hf"] = "hf"
    path: str = Field(description="The model directory (no hub access: a local path).")
    max_length: int = Field(2048, ge=1, description="Tokens per prompt and reply; a longer text loses its start.")
    batch_size: int = Field(16, ge=1, description="Candidates per forward pass.")


class JudgeReward(ScorerSettings):
    """An LLM judge through LiteLLM (gateway/rewards/judge.py)."""

    kind: Literal["judge"] = "judge"
    model: str = Field(description="LiteLLM model string of the judge.")
    api_base: str | None = Field(None, description="Passed to LiteLLM.")
    api_key: str | None = Field(None, description="Passed to LiteLLM.")
    mode: Literal["listwise", "pointwise"] = Field("listwise", description="listwise: one call sees every distinct "
                                                   "candidate; pointwise: one call per candidate.")
    temperature: float = Field(0.0, ge=0, description="The judge's sampling temperature.")
    max_chars: int = Field(4000, ge=1, description="Characters of each candidate the judge reads.")
    max_prompt_chars: int = Field(8000, ge=1, description="Characters of the prompt the judge reads.")


class VLLMReward(ScorerSettings):
    """A reward model served by vLLM's pooling runner: all candidates in one HTTP call."""

    kind: Literal["vllm"] = "vllm"
    api_base: str = Field(description="The vLLM server, e.g. http://vllm-rm:8000/v1.")
    model: str = Field(description="The served reward model's name.")
    endpoint: Literal["classify", "pooling"] = Field("classify", description="vLLM's /classify or /pooling.")
    label_index: int = Field(0, ge=0, description="classify: which class probability is the reward.")
    tokenizer: str | None = Field(None, description="A local tokenizer directory whose chat template joins prompt "
                                  "and reply; unset: joined by a blank line.")
    api_key: str | None = Field(None, description="Bearer key for the vLLM server.")
    truncate_prompt_tokens: int | None = Field(-1, ge=-1, description="Sent to vLLM: -1 keeps the last tokens up to "
                                               "the model's context; unset: vLLM refuses a longer text.")


def _reward_kind(value: Any) -> str:
    """The kind a reward section names; `default` where it names none (`reward: {timeout_s: 5}`)."""
    return value.get("kind", "default") if isinstance(value, dict) else getattr(value, "kind", "default")


RewardConfig = Annotated[
    Annotated[DefaultReward, Tag("default")] | Annotated[PythonReward, Tag("python")]
    | Annotated[EnsembleReward, Tag("ensemble")] | Annotated[HFReward, Tag("hf")]
    | Annotated[JudgeReward, Tag("judge")] | Annotated[VLLMReward, Tag("vllm")],
    Discriminator(_reward_kind),
]
EnsembleReward.model_rebuild()


class StoreConfig(BaseModel):
    """The request log. See gateway/store/writer.py for what happens when the disk misbehaves."""

    model_config = ConfigDict(extra="forbid")

    path: Path = Path("./tao.db")
    batch_size: int = Field(256, ge=1, description="Most records written in one transaction.")
    flush_interval_s: float = Field(0.05, gt=0, description="How long the writer waits for a batch.")
    max_queue: int = Field(100_000, ge=1, description="Records waiting for the disk at most. At the bound the "
                           "gateway answers new completion requests 503 (Retry-After) and /healthz 503, instead "
                           "of holding more records in memory; requests already accepted are still logged.")
    shutdown_timeout_s: float = Field(10.0, gt=0, description="At shutdown, time to commit what is queued; the "
                                      "rest is appended to <path>.unwritten.jsonl, which the next start imports.")
    retention_days: float | None = Field(None, gt=0, description="Delete requests (with candidates and feedback) "
                                         "older than this, hourly; unset: keep everything. `tao logs prune` "
                                         "does the same on demand.")
    journal_size_limit_mb: int = Field(64, ge=0, description="SQLite journal_size_limit: the WAL file shrinks "
                                       "back to this once no reader holds it.")
    busy_timeout_s: float = Field(10.0, gt=0, description="How long one write waits for another process's lock "
                                  "before it counts as failed (and is retried).")
    journal: bool = Field(True, description="Append each record to <path>.journal/ (one write, no fsync) before its "
                          "reply is sent, so a process killed outright (SIGKILL, the OOM killer) loses nothing it "
                          "acknowledged: the next start replays it. Off: records not yet committed die with the "
                          "process.")


class AuthConfig(BaseModel):
    """Keys, and what is open without one. See gateway/auth.py."""

    model_config = ConfigDict(extra="forbid")

    api_keys: list[str] = Field(default_factory=list, description="Empty: the gateway is open (loopback only, "
                                "unless allow_unauthenticated).")
    admin_key: str | None = Field(None, description="Bearer key for /admin routes and X-TAO-Arm. Unset while "
                                  "api_keys are set: admin is closed to everyone.")
    public_paths: list[str] = Field(["/healthz"], description="Paths that answer without a key when api_keys are "
                                    "set; e.g. add /metrics for a scraper without a token.")
    allow_unauthenticated: bool = Field(False, description="Let `tao serve` listen beyond loopback with no API "
                                        "keys (a trusted network).")


class ServerConfig(BaseModel):
    """The HTTP server's limits: what one client can make the gateway hold, and for how long."""

    model_config = ConfigDict(extra="forbid")

    max_body_mb: float = Field(16.0, gt=0, description="Largest request body; larger ones get 413.")
    max_json_depth: int = Field(64, ge=2, description="Deepest nesting of objects and arrays in a body (400 past it).")
    header_timeout_s: float = Field(10.0, gt=0, description="A connection must send a request's complete headers "
                                    "within this (slow-client defence); else it is closed.")
    body_timeout_s: float = Field(30.0, gt=0, description="A request body must arrive within this; else 408.")
    keep_alive_s: float = Field(5.0, gt=0, description="Idle keep-alive connections are closed after this.")
    graceful_shutdown_s: float = Field(30.0, gt=0, description="On SIGTERM, time for in-flight requests to finish "
                                       "before the log is flushed.")


class RolloutConfig(BaseModel):
    """How a candidate checkpoint earns traffic. See gateway/rollout/policy.py for the statistic."""

    model_config = ConfigDict(extra="forbid")

    steps: list[float] = Field(default_factory=lambda: [10.0, 25.0, 50.0, 100.0],
                               description="Canary shares in percent: the canary starts at the first and climbs one "
                               "step at each look that shows no harm; promotion (100) comes at the first look that "
                               "shows the candidate within the margin, from any share.")
    pairs_per_look: int = Field(60, ge=2, description="Prompts with a shadow pair (one prompt answered by both arms) "
                                "between two looks of the policy at the reward; a prompt's repeats count once.")
    max_looks: int = Field(6, ge=1, description="Planned looks: the test ends at the last one, and a candidate not "
                           "shown within the margin by then is rolled back.")
    alpha: float = Field(0.05, gt=0, lt=0.5, description="Chance of a wrong promotion (of a candidate exactly at "
                         "-margin) across all looks, one-sided; spent O'Brien-Fleming-type over the looks.")
    margin: float = Field(0.05, ge=0, description="How far below the incumbent's reward the candidate may be.")
    min_requests_rollback: int = Field(10, ge=2, description="Candidate requests before the error-rate rule may fire.")
    max_error_rate_increase: float = Field(0.05, ge=0, description="Candidate error rate over incumbent's.")
    shadow_fraction: float = Field(0.25, ge=0, le=1, description="Incumbent requests also answered by the "
                                   "candidate in the background: the same-prompt pairs the policy compares.")
    check_interval_s: float = Field(5.0, gt=0, description="How often the policy looks for a new look's worth of "
                                                           "pairs.")
    sync_interval_s: float = Field(2.0, gt=0, description="How often a gateway reads the rollout state from the store "
                                   "and serves it: several gateways on one log follow each other's starts, steps, "
                                   "promotions and rollbacks within this.")
    lease_s: float = Field(15.0, gt=0, description="One gateway on a log decides rollouts, under a lease it renews "
                           "every sync; when it dies, another takes over within this.")
    explore_fraction: float = Field(0.1, ge=0, le=1, description="After promotion, the share of the promoted "
                                    "checkpoint's requests served at the incumbent's best-of-N (arm explore) and "
                                    "logged as training data, so the next distill has something new to learn from. "
                                    "0: the loop stops learning.")
    candidate_best_of: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto", description="N the candidate arm serves at. auto: the smallest k the eval gate's samples predict "
        "within the margin of the incumbent's best-of-N (distill records it with the checkpoint; 1 for a "
        "checkpoint without it). `tao rollout start --best-of` overrides it.")


class LoraSettings(BaseModel):
    """The LoRA adapter every method trains (PEFT's LoraConfig)."""

    model_config = ConfigDict(extra="forbid")

    r: int = Field(16, ge=1, description="LoRA rank.")
    alpha: int = Field(32, ge=1, description="LoRA alpha (the update is scaled by alpha / r).")
    dropout: float = Field(0.05, ge=0, lt=1, description="LoRA dropout.")
    target_modules: str | list[str] = Field("all-linear", description="PEFT target_modules.")


class SFTSettings(BaseModel):
    """Rejection-sampling fine-tuning: which logged winners are learnt (TRL's SFTTrainer)."""

    model_config = ConfigDict(extra="forbid")

    margin: float = Field(0.05, ge=0, description="Keep winners beating their prompt's mean by this.")
    targets_per_prompt: int = Field(1, ge=1, description="The best k distinct ended candidates per prompt.")


class DPOSettings(BaseModel):
    """Preference pairs from the log, and TRL's DPOConfig options."""

    model_config = ConfigDict(extra="forbid")

    min_gap: float = Field(0.1, ge=0, description="Pair the best ended candidate with every candidate at least this "
                           "far below it.")
    max_pairs_per_prompt: int = Field(2, ge=1, description="Pairs per prompt at most (in `pairing` order).")
    pairing: DpoPairing = Field(
        "lowest", description="Which rejected texts pair with the best one: the lowest scores, or shorter and longer "
        "ones alternately (length_balanced), so pairs do not teach length alone; or the lowest and the nearest below "
        "the gap alternately (spread), so a near miss points at the one instruction it missed; or group-relative pairs "
        "over every sample (quantile): the i-th best of the upper half over the i-th lowest.")
    beta: float = Field(0.1, gt=0, description="TRL DPOConfig.beta.")
    loss: list[str] = Field(["sigmoid", "sft"], description="TRL DPOConfig.loss_type; the default adds the "
                            "chosen text's NLL to the preference loss (RPO / BoNBoN style); ['sigmoid']: plain DPO.")
    loss_weights: list[float] | None = Field(None, description="TRL DPOConfig.loss_weights, one per loss.")
    ld_alpha: float | None = Field(None, ge=0, le=1, description="Length-desensitised DPO (TRL ld_alpha): weight of "
                                   "the tokens beyond the shorter answer; unset: plain DPO.")


class GRPOSettings(BaseModel):
    """Online RL with the gateway's own scorer as the reward (TRL's GRPOTrainer)."""

    model_config = ConfigDict(extra="forbid")

    num_generations: int = Field(4, ge=2, description="Samples per prompt, compared within their group.")
    prompts_per_step: int = Field(4, ge=1, description="Prompts per optimiser step.")
    beta: float = Field(0.04, ge=0, description="KL anchor to the base model.")


class RoundSettings(BaseModel):
    """Each iterated round after the first: sample from the new adapter, score, pair, train again."""

    model_config = ConfigDict(extra="forbid")

    best_of: int = Field(8, ge=2, description="Samples per training prompt.")
    rejected: RoundRejected = Field(
        "policy", description="Which texts the round's DPO pairs reject: only the adapter's own new samples (policy: "
        "on-policy negatives, what it still gets wrong; its own sample then wins ties for chosen), or any logged or "
        "sampled candidate below the gap (pooled). Compared in docs/benchmarks.")
    method: DistillStage | None = Field(None, description="Method of the rounds after the first (default: the last "
                                        "stage of `method`).")


# Keys of the flat distill section before the per-method sections (TRL keeps one config per method).
MOVED_DISTILL_KEYS = {
    **{f"sft_{k}": f"sft.{k}" for k in SFTSettings.model_fields},
    **{f"dpo_{k}": f"dpo.{k}" for k in DPOSettings.model_fields},
    **{f"grpo_{k}": f"grpo.{k}" for k in GRPOSettings.model_fields},
    **{f"lora_{k}": f"lora.{k}" for k in LoraSettings.model_fields},
    **{f"round_{k}": f"round.{k}" for k in RoundSettings.model_fields},
}


class DistillConfig(BaseModel):
    """The offline job: which model's logs, how to train, when to publish. What only one method reads
    is in that method's section (`sft`, `dpo`, `grpo`), as TRL keeps one config per trainer."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(EMBEDDED_NAME, description="Public model name whose logs are distilled.")
    base_model: str | None = Field(
        None, description="Weights directory to fine-tune; default: the model's own local weights."
    )
    method: DistillMethod = Field(
        "dpo", description="dpo: logged preference pairs; grpo: online RL with the gateway's own scorer; "
        "sft: the winners (rejection-sampling fine-tuning); sft+dpo: SFT, then DPO on the same adapter.")
    start_from: Literal["incumbent", "base"] = Field(
        "incumbent", description="Once a checkpoint is promoted, what the next run trains: incumbent, that "
        "checkpoint's adapter, further, on the log since its data ended; base, a new adapter on the base weights, "
        "on the whole log. Either way the gate and the rollout judge it against the promoted checkpoint. The "
        "comparison behind the default: docs/benchmarks (Flywheel).")
    rounds: int = Field(6, ge=1, description="Iterated rounds (ReST-EM / BOND style): after each, sample "
                        "round.best_of answers per training prompt from the new adapter through the local backend, "
                        "score them with the gateway's scorer, pair them (round.rejected) and train the same "
                        "adapter again. How the gain grows with rounds: docs/benchmarks.")
    round: RoundSettings = Field(default_factory=RoundSettings, description="The iterated rounds after the first.")
    bf16: bool | None = Field(None, description="Mixed precision: train under bf16 autocast (fp32 master weights) "
                              "and sample the iterated rounds from bf16 weights. Unset: where the hardware runs bf16 "
                              "natively (a GPU, or a CPU with AVX512-BF16 or AMX). The gate samples the adapter in "
                              "the served model's dtype either way.")
    checkpoints_dir: Path = Field(Path("./checkpoints"), description="Where checkpoints are written.")
    holdout_fraction: float = Field(0.2, gt=0, lt=1, description="Share of prompts (by hash) never trained on.")
    min_train_prompts: int = Field(8, ge=1, description="Fewer training prompts than this: the run stops, too "
                                   "little data.")
    min_heldout_prompts: int = Field(2, ge=1, description="Fewer held-out prompts than this: the run stops, too "
                                     "little data.")
    epochs: float = Field(1.0, gt=0, description="Passes over the training rows: steps follow from the data size.")
    max_steps: int | None = Field(None, ge=1, description="Cap on optimiser steps per stage; unset, the epochs decide.")
    batch_size: int = Field(4, ge=1, description="Rows per device per step.")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Micro-batches per optimiser step.")
    learning_rate: float = Field(3e-4, gt=0, description="The optimiser's learning rate.")
    lora: LoraSettings = Field(default_factory=LoraSettings, description="The adapter every method trains.")
    sft: SFTSettings = Field(default_factory=SFTSettings, description="SFT's data.")
    dpo: DPOSettings = Field(default_factory=DPOSettings, description="DPO's pairs and loss.")
    grpo: GRPOSettings = Field(default_factory=GRPOSettings, description="GRPO's sampling and KL anchor.")
    max_new_tokens: int = Field(96, ge=1, description="GRPO completion length when the model sets none "
                                "(GRPO samples with the served model's temperature, top_p and max_tokens).")
    max_length: int = Field(512, ge=16, description="Prompt + completion tokens kept for SFT/DPO.")
    sample_on: Literal["local", "serving"] = Field(
        "local", description="Where the iterated rounds and the eval gate sample the adapter: `local`, a local backend "
        "over the base weights on the distill machine; `serving`, the served model's own backend (its vLLM servers, "
        "the adapter loaded at runtime and freed after; they must read the checkpoints directory). Local is the "
        "default: on 2 CPU cores it sampled an adapter faster than vLLM's CPU build (docs/benchmarks, Engines); "
        "on a GPU, serving gives vLLM's speed and gates the engine the rollout serves with.")
    eval_samples: int = Field(4, ge=1, description="N=1 samples per held-out prompt, for base and new, at the gate.")
    gate_margin: float = Field(0.0, description="Publish only if the lower bound of new − base N=1 reward "
                               "(paired per prompt, at rollout.alpha) is above this.")
    merge: bool = Field(False, description="Also write merged full weights beside the adapter.")
    serving_max_lora_rank: int | None = Field(None, ge=1, description="The serving engine's largest LoRA rank "
                                              "(vLLM's --max-lora-rank): a lora.r above it is refused here, not when "
                                              "vLLM fails to load the adapter.")
    lock_ttl_s: float = Field(120.0, gt=0, description="The distill lock's lease: renewed by the running job; a "
                              "job killed without releasing it blocks the next one for at most this long.")
    seed: int = Field(0, description="Seed of the data order, sampling and training.")
    verbose: bool = Field(False, description="Print the trainer's raw metrics at every step (by default each "
                          "training run shows one progress bar with its loss and reward margin).")

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, data: Any) -> Any:
        """A flat key of the old layout is refused with where it went (`dpo_beta` is now `dpo.beta`)."""
        if isinstance(data, dict):
            moved = [f"{key} is now {MOVED_DISTILL_KEYS[key]}" for key in data if key in MOVED_DISTILL_KEYS]
            if moved:
                raise ValueError("distill keys moved into per-method sections: " + "; ".join(moved))
        return data

    @model_validator(mode="after")
    def _rank_servable(self) -> DistillConfig:
        if self.serving_max_lora_rank is not None and self.lora.r > self.serving_max_lora_rank:
            raise ValueError(f"lora.r {self.lora.r} exceeds serving_max_lora_rank {self.serving_max_lora_rank}: "
                             "vLLM would refuse to load the adapter (raise its --max-lora-rank, or lower lora.r)")
        return self


def default_models() -> list[ModelConfig]:
    """What `tao serve` serves with no config: the embedded SmolLM2 on this machine's CPU."""
    return [
        ModelConfig(
            name=EMBEDDED_NAME,
            backend="local",
            model=EMBEDDED_MODEL,
            best_of=4,
            max_best_of=16,
            temperature=0.8,
            top_p=0.95,
            max_tokens=128,
        )
    ]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TAO_", env_nested_delimiter="__", extra="forbid", yaml_file=None
    )

    models: list[ModelConfig] = Field(default_factory=default_models)
    reward: RewardConfig = Field(default_factory=DefaultReward)
    store: StoreConfig = Field(default_factory=StoreConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, YamlConfigSettingsSource(settings_cls))

    @model_validator(mode="after")
    def _unique_model_names(self) -> Settings:
        names = [m.name for m in self.models]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"model names must be unique; repeated: {duplicated}")
        return self

    def model_by_name(self, name: str) -> ModelConfig | None:
        return next((m for m in self.models if m.name == name), None)


ConfigT = TypeVar("ConfigT", bound=BaseModel)


def with_updates(config: ConfigT, **updates: Any) -> ConfigT:
    """A copy of `config` with `updates`, validated like a config file's values.

    `model_copy(update=...)` validates nothing: a command-line string would stay a string where a
    Path belongs, and `max_steps=0` would slip past `ge=1`. This raises `ValidationError` instead.
    """
    return type(config).model_validate({**config.model_dump(), **updates})


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Settings from `path` (or `$TAO_CONFIG`), then `TAO_` env vars, then explicit overrides."""
    path = path or os.environ.get("TAO_CONFIG")
    if path is None:
        return Settings(**overrides)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")

    class FileSettings(Settings):
        model_config = SettingsConfigDict(yaml_file=path)

    return FileSettings(**overrides)
