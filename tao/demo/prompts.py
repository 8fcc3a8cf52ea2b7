"""A seeded generator of instruction-following prompts with checkable constraints.

Topics × tasks × constraints, each constraint kind in several phrasings (digits or words for
counts). Every phrasing is one the default scorer (`gateway.rewards.instructions`) reads, so the
workload exercises exactly what best-of-N selects for. The same seed always gives the same prompts, so runs are comparable.
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

SPELLED = {2: "two", 3: "three", 4: "four", 10: "ten", 15: "fifteen", 20: "twenty", 30: "thirty"}


def _count(r: random.Random, n: int) -> str:
    """A count as people write it: digits or words."""
    return SPELLED[n] if n in SPELLED and r.random() < 0.5 else str(n)


# Each kind in several phrasings (imperatives, questions, "please make sure", requirements), so the
# distilled model learns the kinds, not one template; the scorer reads all of them.
CONSTRAINTS = [
    lambda r: r.choice([
        "Answer in at most {n} words.", "Keep it under {n} words, please.", "Could you stay within {n} words?",
        "Please make sure the reply is no more than {n} words long.", "Word limit: {n}.",
    ]).format(n=_count(r, r.choice([10, 15, 20, 30]))),
    lambda r: r.choice([
        "Answer in exactly {n} sentences.", "Use {n} sentences, no more and no fewer.",
        "Your reply should be exactly {n} sentences long.", "Can you say it in precisely {n} sentences?",
    ]).format(n=r.choice(["one", "two", "three"])),
    lambda r: r.choice([
        "Use exactly {n} bullet points.", "Give me {n} bullet points.", "Format it as a bulleted list of {n} items.",
        "Please answer with {n} markdown bullet points.",
    ]).format(n=_count(r, r.choice([2, 3, 4]))),
    lambda r: r.choice([  # never both cases
        "Write in all lowercase letters.", "Please use no capital letters at all.", "Reply entirely in lowercase.",
        "Write in all capital letters.", "Your whole answer should be in uppercase.", "Answer in ALL CAPS.",
    ]),
    lambda r: r.choice([
        "Include the word '{w}'.", "Make sure the word \"{w}\" appears somewhere.", "Please mention '{w}' in it.",
        "It is important that you use the keyword '{w}'.",
    ]).format(w=r.choice(KEYWORDS)),
    lambda r: r.choice([
        "Do not use the word '{w}'.", "Avoid the word \"{w}\".", "The word '{w}' must not appear.",
        "Please never say '{w}'.",
    ]).format(w=r.choice(["very", "really", "good", "is"])),
    lambda r: r.choice([
        "End your response with the phrase '{e}'", "Finish with the exact sentence \"{e}\"",
        "The last line should be '{e}'",
    ]).format(e=r.choice(ENDINGS)),
    lambda r: r.choice(["Do not use any commas.", "No commas, please.", "Write it without a single comma.",
                        "Commas are not allowed."]),
    lambda r: r.choice(["Give your answer a title wrapped in double angular brackets, like <<title>>.",
                        "Start with a title in double angle brackets, such as <<my title>>."]),
    lambda r: r.choice(["Add a postscript starting with P.S.", "Please end with a P.S. note.",
                        "Include a postscript (P.S.) at the end."]),
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
