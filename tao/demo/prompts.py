"""A seeded generator of instruction-following prompts with checkable constraints.

Topics × tasks × constraint templates. Every constraint is phrased so that the default scorer
(`gateway.rewards.instructions`) recognises it, so the workload exercises exactly what best-of-N
selects for. The same seed always gives the same prompts, so runs are comparable.
"""

from __future__ import annotations

import random

TOPICS = [
    "the ocean", "coffee", "a rainy day", "the moon", "bicycles", "honeybees", "libraries", "volcanoes",
    "winter mornings", "a city park", "trains", "chess", "bread baking", "the night sky", "gardening",
    "mountains", "rivers", "owls", "music lessons", "a lighthouse", "autumn leaves", "friendship",
    "recycling", "the desert", "a market", "penguins", "old maps", "kites", "tea", "snow", "bridges",
    "clocks", "forests", "the wind", "a small village", "paper boats", "sunflowers", "the harbor",
    "a school trip", "dolphins",
]
TASKS = [
    "Describe {topic}", "Write a short note about {topic}", "Explain {topic} to a child",
    "Give some advice about {topic}", "Tell me a fact about {topic}", "Write a few lines about {topic}",
]
KEYWORDS = ["bright", "simple", "quiet", "history", "water", "light", "small", "gentle"]
ENDINGS = ["Is there anything else?", "That is all.", "Thank you for reading."]

CONSTRAINTS = [
    lambda r: f"Answer in at most {r.choice([10, 15, 20, 30])} words.",
    lambda r: f"Answer in exactly {r.choice(['one', 'two', 'three'])} sentences.",
    lambda r: f"Use exactly {r.choice([2, 3, 4])} bullet points.",
    lambda r: r.choice(["Write in all lowercase letters.", "Write in all capital letters."]),  # never both
    lambda r: f"Include the word '{r.choice(KEYWORDS)}'.",
    lambda r: f"Do not use the word '{r.choice(['very', 'really', 'good', 'is'])}'.",
    lambda r: f"End your response with the phrase '{r.choice(ENDINGS)}'",
    lambda r: "Do not use any commas.",
    lambda r: "Give your answer a title wrapped in double angular brackets, like <<title>>.",
    lambda r: "Add a postscript starting with P.S.",
]


def plain_prompts(count: int, seed: int = 0) -> list[str]:
    """`count` distinct prompts with no verifiable instruction (a task about a topic, nothing else)."""
    rng = random.Random(seed)
    every = [task.format(topic=topic) + "." for task in TASKS for topic in TOPICS]
    if count > len(every):
        raise ValueError(f"only {len(every)} plain prompts exist")
    return rng.sample(every, count)


def generate_prompts(count: int, seed: int = 0, max_constraints: int = 2) -> list[str]:
    """`count` distinct prompts, each a task about a topic plus 1..max_constraints constraints."""
    rng = random.Random(seed)
    prompts: list[str] = []
    seen: set[str] = set()
    attempts = 0
    while len(prompts) < count:
        attempts += 1
        if attempts > count * 100:
            raise ValueError(f"cannot make {count} distinct prompts from these templates")
        task = rng.choice(TASKS).format(topic=rng.choice(TOPICS))
        picked = rng.sample(CONSTRAINTS, rng.randint(1, max_constraints))
        prompt = " ".join([task + ".", *(make(rng) for make in picked)])
        if prompt not in seen:
            seen.add(prompt)
            prompts.append(prompt)
    return prompts
