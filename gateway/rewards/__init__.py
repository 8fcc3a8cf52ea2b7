"""Scorers by kind, built from config through one registry (no if-chains: register a factory)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.config import (
    DefaultReward,
    EnsembleReward,
    HFReward,
    JudgeReward,
    PythonReward,
    RewardConfig,
    VLLMReward,
)
from gateway.rewards.base import FunctionScorer, Scorer, ScorerOutputError
from gateway.rewards.reading import OnSkipped, WindowedScorer

ScorerFactory = Callable[[Any], Scorer]  # takes the kind's own config model (gateway/config.py)
_REGISTRY: dict[str, ScorerFactory] = {}


def register_scorer(kind: str) -> Callable[[ScorerFactory], ScorerFactory]:
    """Decorator: make `reward: {kind: <kind>, ...}` build a scorer with this factory, which gets the
    kind's config model (a new kind also adds its model to the `RewardConfig` union)."""

    def add(factory: ScorerFactory) -> ScorerFactory:
        _REGISTRY[kind] = factory
        return factory

    return add


def scorer_kinds() -> list[str]:
    return sorted(_REGISTRY)


def build_scorer(config: RewardConfig, on_skipped: OnSkipped | None = None) -> Scorer:
    """The scorer `config` names, reading only `config.read` of each prompt and candidate
    (`gateway.rewards.reading`); `on_skipped(part, chars)` hears of every text it cut."""
    return WindowedScorer(_build(config), config.read, on_skipped)


def _build(config: RewardConfig) -> Scorer:
    factory = _REGISTRY.get(config.kind)
    if factory is None:
        raise ValueError(f"unknown reward kind {config.kind!r}; known: {', '.join(scorer_kinds())}")
    return factory(config)


@register_scorer("default")
def _default(config: DefaultReward) -> Scorer:
    from gateway.rewards import default

    return default.build()


@register_scorer("python")
def _python(config: PythonReward) -> Scorer:
    from gateway.rewards import python_scorer

    return python_scorer.build(config.function)


@register_scorer("ensemble")
def _ensemble(config: EnsembleReward) -> Scorer:
    from gateway.rewards.ensemble import EnsembleScorer

    return EnsembleScorer([(member.weight, _build(member)) for member in config.members])


@register_scorer("hf")
def _hf(config: HFReward) -> Scorer:
    from gateway.rewards.hf import HFRewardModel

    return HFRewardModel(config)


@register_scorer("judge")
def _judge(config: JudgeReward) -> Scorer:
    from gateway.rewards.judge import JudgeScorer

    return JudgeScorer(config)


@register_scorer("vllm")
def _vllm(config: VLLMReward) -> Scorer:
    from gateway.rewards.vllm_scorer import VLLMRewardScorer

    return VLLMRewardScorer(config)


__all__ = ["FunctionScorer", "Scorer", "ScorerOutputError", "build_scorer", "register_scorer", "scorer_kinds"]
