"""Any importable `module:function(prompt, candidates) -> list[float]`: verifiers, unit tests, rules."""

from __future__ import annotations

import importlib

from gateway.rewards.base import FunctionScorer


def build(function: str) -> FunctionScorer:
    module_name, sep, attr = function.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"python scorer wants 'module:function', got {function!r}")
    fn = getattr(importlib.import_module(module_name), attr, None)
    if not callable(fn):
        raise ValueError(f"{function} is not a callable")
    return FunctionScorer(f"python:{function}", fn)
