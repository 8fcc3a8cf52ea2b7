"""Where one request goes while a model has a rollout: which arm, which adapter, at which N."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, replace

from gateway.buckets import stable_fraction
from gateway.config import ModelConfig
from gateway.errors import APIError
from gateway.store import Arm, Rollout, RolloutState


def adapter_name(checkpoint_id: str) -> str:
    """The name a checkpoint's adapter is loaded under on a backend."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", checkpoint_id)


@dataclass
class Route:
    """Where one request goes."""

    arm: Arm
    adapter: str | None
    default_best_of: int
    model_version: str | None


def _candidate(rollout: Rollout, arm: Arm) -> Route:
    return Route(arm, adapter_name(rollout.checkpoint_id), rollout.candidate_best_of, rollout.checkpoint_id)


def incumbent_route(model: ModelConfig, rollout: Rollout | None) -> Route:
    """The incumbent arm: the base weights at the model's best_of, or, while a canary would replace a
    promoted checkpoint, that checkpoint at the k it was promoted at."""
    if rollout is not None and rollout.state == RolloutState.CANARY and rollout.incumbent_checkpoint_id:
        return Route(Arm.BASE, adapter_name(rollout.incumbent_checkpoint_id), rollout.incumbent_best_of,
                     rollout.incumbent_checkpoint_id)
    return Route(Arm.BASE, None, model.best_of, None)


def route(model: ModelConfig, rollout: Rollout | None, key: str, pinned: str | None, explore_fraction: float,
          rng: random.Random) -> Route:
    """The arm of a request: by a stable hash of `key` into the canary share (a user stays on one
    arm), unless the caller pinned one (X-TAO-Arm); everything goes to a promoted checkpoint, at its
    k, except `explore_fraction` of requests, drawn at random, served at the model's best-of-N as
    the next cycle's training data."""
    base = incumbent_route(model, rollout)
    if rollout is None:
        if pinned == Arm.CANDIDATE:
            raise APIError(400, f"model {model.name} has no rollout to pin", param="X-TAO-Arm")
        return base
    candidate = _candidate(rollout, Arm.CANDIDATE)
    if rollout.state == RolloutState.PROMOTED:
        if rng.random() < explore_fraction:
            return replace(candidate, arm=Arm.EXPLORE, default_best_of=model.best_of)
        return replace(candidate, arm=Arm.PROMOTED)
    if pinned is not None:
        return candidate if pinned == Arm.CANDIDATE else base
    return candidate if stable_fraction(key) * 100 < rollout.share else base


def shadow_route(rollout: Rollout | None, fraction: float, rng: random.Random) -> Route | None:
    """For an incumbent request: a candidate route to answer it in the background, sampled at
    `fraction` while the rollout is a canary."""
    if rollout is None or rollout.state != RolloutState.CANARY or rng.random() >= fraction:
        return None
    return _candidate(rollout, Arm.SHADOW)
