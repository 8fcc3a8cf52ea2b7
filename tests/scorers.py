"""Scorers the tests point `reward: {kind: python, function: ...}` at."""

import time


def longest(prompt: str, candidates: list[str]) -> list[float]:
    return [float(len(c)) for c in candidates]


def prefers_keyword(prompt: str, candidates: list[str]) -> list[float]:
    return [1.0 if "WINNER" in c else 0.0 for c in candidates]


def broken(prompt: str, candidates: list[str]) -> list[float]:
    raise RuntimeError("reward model crashed")


def wrong_length(prompt: str, candidates: list[str]) -> list[float]:
    return [1.0]


def slow(prompt: str, candidates: list[str]) -> list[float]:
    time.sleep(2)
    return [0.0] * len(candidates)
