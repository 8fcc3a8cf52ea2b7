import asyncio

import pytest
from pydantic import ValidationError

from gateway.config import EnsembleReward, PythonReward, Settings
from gateway.rewards import build_scorer, scorer_kinds
from gateway.rewards.default import instruction_following
from gateway.rewards.instructions import detect
from gateway.rewards.text import repetition


def ids(prompt: str) -> set[str]:
    return {c.kind for c in detect(prompt)}


@pytest.mark.parametrize(
    ("prompt", "good", "bad"),
    [
        ("Describe tea in at most 5 words.", "Tea is a warm drink.", "Tea is a warm and soothing drink loved worldwide."),
        ("Write at least 8 words about rain.", "Rain falls softly on the quiet town tonight.", "Rain falls."),
        ("List exactly 3 bullet points about cats.", "- soft\n- curious\n- independent", "- soft\n- curious"),
        ("Answer in exactly 2 sentences.", "Cats purr. Dogs bark.", "Cats purr. Dogs bark. Birds sing."),
        ("Write 2 paragraphs about tea, separated by ***.", "Tea is old.\n***\nTea is loved.", "Tea is old. Tea is loved."),
        ("Include the word 'ocean' in your reply.", "The ocean is deep.", "The sea is deep."),
        ("Do not use the word 'very' anywhere.", "It is quite big.", "It is very big."),
        ("Reply in all lowercase letters.", "hello there.", "Hello there."),
        ("Reply in all capital letters.", "TEA IS A WARM DRINK LOVED BY MANY PEOPLE.", "Tea is a warm drink loved by many people."),
        ("Return the answer as valid JSON.", '```json\n{"a": 1}\n```', "a is 1"),
        ("End your response with the phrase 'Any questions?'", "That is all. Any questions?", "That is all."),
        ("Please make sure the letter 'z' appears at least 3 times.", "Zebras zigzag in a zoo.", "Cats nap."),
        ("Respond only in Spanish, please.", "El té es una bebida caliente muy popular en todo el mundo.",
         "Tea is a hot drink that is very popular all over the world."),
        ("Please answer in Dutch.", "Dit is een korte zin in het Nederlands over windmolens en water.",
         "This is a short sentence in English about windmills and water."),
        ("Wrap your entire answer in double quotation marks.", '"Tea is good."', "Tea is good."),
        ("Highlight at least 2 sections with markdown, i.e. *highlighted section*.", "*Tea* is *good*.", "Tea is good."),
        ("Write a line without any commas.", "No commas here.", "Well, commas here."),
        ("Give it a title wrapped in double angular brackets, like <<title>>.", "<<Tea>>\nTea is good.", "Tea is good."),
        ("Add a postscript starting with P.S.", "Done.\nP.S. thanks", "Done."),
    ],
)
def test_each_instruction_prefers_the_compliant_reply(prompt, good, bad):
    assert len(detect(prompt)) == 1, ids(prompt)
    good_score, bad_score = instruction_following(prompt, [good, bad])
    assert good_score > bad_score


def test_several_constraints_are_checked_together():
    prompt = "In at most 10 words and all lowercase, describe the moon. Include the word 'silver'."
    assert ids(prompt) == {"number_words", "english_lowercase", "existence"}
    all_three, two, none = instruction_following(prompt, [
        "the silver moon glows.", "The silver moon glows.", "The Moon is a large rocky satellite orbiting the Earth slowly.",
    ])
    assert all_three > two > none


def test_degenerate_repetition_and_empty_replies_score_low():
    loop = "a fleeting sight, " * 12
    assert repetition(loop) > 0.8 and repetition("The cat sat on the warm mat today.") == 0
    fluent, looping, empty = instruction_following("Tell me about the sea.", [
        "The sea covers most of the planet.", loop, ""])
    assert fluent > looping > empty == 0.0
    assert all(0.0 <= s <= 1.0 for s in (fluent, looping, empty))


@pytest.mark.parametrize(
    "prompt",
    ["Describe tea. Answer in at most 10 words.", "Describe tea. Do not use the word 'very'.",
     "Describe tea. Do not use any commas.", "Tell me a fact about tea."],
)
def test_near_empty_replies_do_not_win(prompt):
    dot, ok, real = instruction_following(prompt, [".", "Ok.", "Tea is a warm drink made from dried leaves."])
    assert dot == 0.0 and ok < 0.25 and real > 0.9


def test_short_loops_count_as_repetition_and_a_is_not_a_number():
    assert repetition("the the the the") > 0
    assert "number_bullet_lists" not in ids("Describe owls. Use a bullet to list facts.")
    assert "number_sentences" not in ids("Describe owls in a sentence or two.")


def test_a_postscript_is_not_one_of_the_sentences():
    prompt = "Describe owls in exactly two sentences. Add a postscript starting with P.S."
    assert instruction_following(prompt, ["Owls hunt at night. They are quiet. P.S. I like owls."]) == [1.0]
    lower = "Write in all lowercase letters. Add a postscript starting with P.S."
    assert instruction_following(lower, ["owls hunt at night and sleep by day. p.s. i like owls."]) == [1.0]


def test_registry_builds_python_and_ensemble_scorers():
    assert {"default", "python", "ensemble"} <= set(scorer_kinds())
    ensemble = build_scorer(EnsembleReward(members=[
        PythonReward(function="tests.scorers:longest", weight=0.5),
        PythonReward(function="tests.scorers:prefers_keyword", weight=10.0),
    ]))
    scores = asyncio.run(ensemble.score("p", ["WINNER", "longer text"]))
    assert scores == [0.5 * 6 + 10.0, 0.5 * 11]


def test_config_refuses_unknown_kinds_and_misspelt_keys_naming_them_and_bad_functions_at_build():
    with pytest.raises(ValidationError, match="'magic'.*expected tags: 'default', 'python'"):
        Settings(reward={"kind": "magic"})
    with pytest.raises(ValidationError, match=r"reward\.judge\.modle\s+Extra inputs are not permitted"):
        Settings(reward={"kind": "judge", "modle": "openai/judge"})
    with pytest.raises(ValidationError, match=r"reward\.judge\.model\s+Field required"):
        Settings(reward={"kind": "judge"})
    with pytest.raises(ValidationError, match=r"reward\.ensemble\.members\.0\.python\.function"):
        Settings(reward={"kind": "ensemble", "members": [{"kind": "python"}]})
    with pytest.raises(ValueError, match="module:function"):
        build_scorer(PythonReward(function="no_colon"))
    assert Settings(reward={"timeout_s": 5}).reward.kind == "default"  # a section naming no kind: the default
