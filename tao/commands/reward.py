"""`tao reward train`: a reward model from people's feedback (and the logs)."""

from __future__ import annotations

import argparse
from pathlib import Path

from tao.commands.common import config_flag, settings_from
from tao.flags import add_field_flags, field_values

TRAIN_HELP = {  # RewardTrainOptions is a plain dataclass: its fields carry no descriptions
    "out_dir": "where trained reward models are written",
    "from_logs": "add best-vs-worst pairs from the logs",
    "min_gap": "score gap for --from-logs pairs",
    "min_pairs": "fewest training pairs to train on",
    "holdout_fraction": "share of pairs (by prompt hash) held out to measure accuracy",
    "max_steps": "training steps",
    "batch_size": "pairs per training step",
    "learning_rate": "LoRA learning rate",
    "lora_r": "LoRA rank",
    "max_length": "tokens of prompt + answer kept",
    "seed": "training seed",
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    from distill.reward_model import RewardTrainOptions

    reward = sub.add_parser("reward", help="reward models")
    reward_sub = reward.add_subparsers(dest="reward_command", required=True)
    reward_train = reward_sub.add_parser(
        "train", help="train a reward model from feedback",
        description="Build preference pairs from POST /v1/feedback verdicts (and with --from-logs, from confident "
        "score gaps in the logs), train a Bradley-Terry reward model with TRL's RewardTrainer (LoRA on a small "
        "base, CPU-capable), report held-out pairwise accuracy, and register it; then use it with "
        "`reward: {kind: hf, path: ...}`. Exit code 2 when there are too few pairs.")
    config_flag(reward_train)
    reward_train.add_argument("--base-model", type=Path,
                              help="weights directory (default: the distill model's weights)")
    add_field_flags(reward_train, RewardTrainOptions, "reward", exclude=("base_model", "model"),
                    flags={"out_dir": "--out"}, helps=TRAIN_HELP)
    reward_train.set_defaults(run=train)


def train(args: argparse.Namespace) -> int:
    from distill.job import base_weights
    from distill.reward_model import RewardTrainOptions, TooFewPairs, train_reward_model

    settings = settings_from(args)
    base = args.base_model or base_weights(settings)[1]
    options = RewardTrainOptions(base_model=base, model=settings.distill.model, **field_values(args, "reward"))
    try:
        row = train_reward_model(settings.store.path, options)
    except TooFewPairs as exc:
        print(exc)
        return 2
    metrics = row["metrics"]
    print(f"held-out pairwise accuracy {metrics['heldout_pairwise_accuracy']:.1%} on {metrics['heldout_pairs']} pairs "
          f"({metrics['train_pairs']} trained on); registered {row['id']}")
    print(f"use it with:  reward: {{kind: hf, path: {row['path']}}}")
    return 0
