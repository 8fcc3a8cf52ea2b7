"""`tao demo`'s options and their defaults, in one model: the CLI's flags are generated from it.

A module of its own so that building the `tao` parser does not import the demo's machinery.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from gateway.config import DistillConfig, DistillMethod, RolloutConfig, RoundSettings


class DemoConfig(BaseModel):
    """About 13 minutes on 2 CPU cores with the embedded SmolLM2 (served in bf16 there); each distill round past
    the first adds about 3 (docs/benchmarks/index.md)."""

    model_config = ConfigDict(extra="forbid")

    prompts: int = Field(80, ge=1, description="Prompts in the best-of-N traffic.")
    best_of: int = Field(8, ge=1, description="N of the traffic.")
    method: DistillMethod = Field(DistillConfig.model_fields["method"].default, description="Distill method.")
    distill_rounds: int = Field(3, ge=1, description="Iterated distill rounds (the job's default is "
                                f"{DistillConfig.model_fields['rounds'].default}; fewer here to fit the demo's "
                                "time on 2 cores).")
    round_best_of: int = Field(4, ge=2, description="Samples per training prompt in each iterated round (the job's "
                               f"default is {RoundSettings.model_fields['best_of'].default}; fewer here to fit the "
                               "demo's time on 2 cores).")
    seed: int = Field(0, description="Prompt generator and training seed.")
    out: Path = Field(Path("tao-demo"), description="Directory for the log, checkpoints and report.")
    max_steps: int | None = Field(None, ge=1, description="Cap on training steps; unset, distill.epochs decide.")
    max_tokens: int = Field(48, ge=1, description="Tokens per generated answer.")
    rounds: int = Field(3, ge=1, description="The rollout policy's looks at most (the last one decides: promote, "
                        "or roll back what was not shown within the margin). Each round of prompts brings one look; "
                        "the demo stops at the first decision.")
    prompts_per_look: int = Field(12, ge=2, description="Prompts with a shadow pair between two looks of the "
                                  "rollout policy.")
    concurrency: int = Field(8, ge=1, description="Requests in flight at once (queued ones share the local model's "
                             "generate calls).")
    verbose: bool = Field(DistillConfig.model_fields["verbose"].default,
                          description=DistillConfig.model_fields["verbose"].description)
    gate_margin: float = Field(DistillConfig.model_fields["gate_margin"].default,
                               description="Publish only if the lower bound of the N=1 reward gain is above this.")
    rollout_margin: float = Field(RolloutConfig.model_fields["margin"].default,
                                  description="How far below best-of-N the distilled N=1 may be, for the gate and "
                                  "the rollout policy.")
