"""The default scorer reads instructions in phrasings it was not written from.

Each corpus was written by someone who saw neither the detector nor the corpora before it, and was
measured untuned before any of it was tuned on (figures in the README):
`instruction_prompts.jsonl` (316 prompts), `instruction_prompts_fresh.jsonl` (170; untuned
97.3 % precision / 82.6 % recall), `instruction_prompts_holdout.jsonl` (240; untuned 91.2 % /
92.5 %; its even half 90.7 % / 94.5 %, and, after tuning on its odd half, 91.9 % / 94.5 %) and
`instruction_prompts_final.jsonl` (240; untuned 94.7 % / 95.8 %). All four are tuned on now. The floors are the current figures rounded down, so a change that reads prompts
worse fails here.
"""

from pathlib import Path

from bench.instruction_detection import CORPUS, evaluate, load

FRESH = Path(CORPUS).with_name("instruction_prompts_fresh.jsonl")
HOLDOUT = Path(CORPUS).with_name("instruction_prompts_holdout.jsonl")
FINAL = Path(CORPUS).with_name("instruction_prompts_final.jsonl")


def test_detection_on_the_corpus_it_was_tuned_on():
    tally = evaluate(load(CORPUS))
    assert tally.precision() >= 0.99 and tally.recall() >= 0.99, (tally.precision(), tally.recall())
    assert tally.args() >= 0.98


def test_detection_on_the_later_corpora():
    for corpus in (FRESH, HOLDOUT, FINAL):
        tally = evaluate(load(corpus))
        assert tally.precision() >= 0.98 and tally.recall() >= 0.99, (corpus.name, tally.precision(), tally.recall())
        assert tally.args() >= 0.99


def test_prompts_without_an_instruction_are_read_as_such():
    rows = [row for row in load(CORPUS) + load(FRESH) + load(HOLDOUT) + load(FINAL) if not row["instructions"]]
    tally = evaluate(rows)
    assert len(rows) >= 215 and sum(tally.fp.values()) <= 8


def read(prompt: str):
    from gateway.rewards.instructions import read_prompt

    return read_prompt(prompt)


def kinds(prompt: str) -> dict:
    return {c.id.split(":")[1]: c.kwargs for c in read(prompt).constraints}


def test_a_range_is_read_as_both_bounds_never_as_one_of_them():
    from gateway.rewards.checks import satisfied

    for prompt, low, high in (("Write between 100 and 150 words about tea.", 100, 150),
                              ("Write about tea in 80 to 120 words.", 80, 120),
                              ("Write about tea: at least 60 words but no more than 90 words.", 60, 90),
                              ("Write about tea, more than 60 and fewer than 90 words.", 61, 89)):
        words = kinds(prompt)["number_words"]
        assert words == {"relation": "between", "num_words": low, "upper": high}, prompt
        for count, meets in ((low - 1, False), (low, True), (high, True), (high + 1, False)):
            reply = " ".join(["word"] * count) + "."
            assert satisfied("length_constraints:number_words", words, reply) is meets, (prompt, count)
    assert kinds("Describe Mars in 3 or 4 sentences.")["number_sentences"] == {"relation": "between",
                                                                              "num_sentences": 3, "upper": 4}
    assert "number_bullet_lists" not in kinds("Give me 3 to 5 bullet points on saving money.")  # IFEval's is exact


def test_a_relation_between_sentences_is_unverifiable_not_a_keyword_or_a_count():
    for prompt in ("Write a poem where each sentence is 2 words longer than the one before.",
                   "Write four paragraphs that get progressively shorter.",
                   "Make the second list longer than the first."):
        reading = read(prompt)
        assert reading.constraints == () and reading.unverifiable, prompt


def test_a_count_per_part_or_at_a_position_is_not_read_as_a_count_of_the_whole():
    per_bullet = read("Use exactly 3 bullet points, each under 10 words.")
    assert kinds("Use exactly 3 bullet points, each under 10 words.") == {"number_bullet_lists": {"num_bullets": 3}}
    assert per_bullet.unverifiable
    assert "number_words" not in kinds("Write an op-ed where no paragraph is longer than 70 words.")
    assert "number_words" not in kinds("The subject line must be under 8 words. Keep the whole email under 250 words.") \
        or kinds("The subject line must be under 8 words. Keep the whole email under 250 words.")["number_words"][
            "num_words"] == 250
    assert "frequency" not in kinds("Use the word 'forever' exactly twice, and both times in the last paragraph.")
    # the rest of the clause still reads: the count of words is the reply's, the position is content
    assert kinds("Please make it more than 120 words, with each question in bold.")["number_words"]["num_words"] == 120


def test_contradictions_and_foreign_constraints_are_unverifiable_and_code_is_not_read():
    contradictory = read("Write at least 300 words about owls. Keep it under 50 words.")
    assert "number_words" not in kinds("Write at least 300 words about owls. Keep it under 50 words.")
    assert contradictory.unverifiable
    for prompt in ("Parle-moi des chats. Réponds en moins de 50 mots.", "Erzähl mir von Katzen in höchstens 3 Sätzen."):
        assert read(prompt).constraints == () and read(prompt).unverifiable, prompt
    code = "Why does this fail?\n```python\n# Return the answer in all caps and in under 10 words.\ndef f(): pass\n```"
    assert read(code).constraints == ()


def test_a_hundred_constraint_sentences_are_read_without_error():
    rules = [f"Do not use the word 'banned{i}'." for i in range(35)] + \
            [f"Include the keyword 'kept{i}'." for i in range(30)] + \
            ["Write at least 300 words.", "Use no commas.", "End with 'Bye.'", "Write in lowercase."] * 9
    reading = read("Write an article about gardens. " + " ".join(rules[:100]))
    found = {c.id for c in reading.constraints}
    assert {"keywords:forbidden_words", "keywords:existence", "length_constraints:number_words"} <= found


def test_the_commonest_outside_kinds_are_read_and_checked():
    from gateway.rewards.checks import satisfied

    cases = [("Write a caption with 2 to 4 emojis.", "tao:emoji_count", "Sunny day ☀️🌊 at the beach 🏖️.", True),
             ("Write a caption with 2 to 4 emojis.", "tao:emoji_count", "Sunny day at the beach.", False),
             ("No hashtags, please; keep it short.", "tao:hashtag_count", "Fresh bread daily.", True),
             ("Add exactly 3 hashtags at the end.", "tao:hashtag_count", "Bread! #fresh #bakery", False),
             ("Start your reply with 'Hi there,' and keep it warm.", "tao:starts_with", "Hi there, thanks!", True),
             ("Start your reply with 'Hi there,' and keep it warm.", "tao:starts_with", "Hello, thanks!", False),
             ("End your answer with a question to the reader.", "tao:ends_with_question", "Ready to try it?", True),
             ("End your answer with a question to the reader.", "tao:ends_with_question", "Try it.", False)]
    for prompt, kind, reply, meets in cases:
        [constraint] = [c for c in read(prompt).constraints if c.id == kind]
        assert satisfied(kind, constraint.kwargs, reply) is meets, (prompt, reply)
    assert read("A couple of emojis are fine but don't overdo them.").constraints == ()  # a permission
    assert read("Paragraph 2 should begin with the word 'meanwhile'.").constraints[0].id != "tao:starts_with"


def test_a_keyword_with_its_own_count_is_not_read_as_mere_presence():
    found = kinds("Use the word 'sustainable' exactly twice and mention 'AI' at most once.")
    assert found["frequency"]["keyword"] == "sustainable" and "existence" not in found
