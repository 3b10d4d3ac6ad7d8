"""Many questions at once (`EditableLM.score_many`) give what one-at-a-time calls give, on the
real default model: each question with its own retrieval and mode, packed side by side."""
from __future__ import annotations

import pytest

from editkit.errors import InvalidInputError

QUESTIONS = [
    ("The mother tongue of Danielle Darrieux is", ["English", "French"], "ptokens"),
    ("The Eiffel Tower is located in the city of", ["Rome", "Paris", "Berlin"], "prompt"),
    ("The capital of Japan is", ["Tokyo", "Kyoto"], "ptokens"),  # no edit is about it
    ("Danielle Darrieux spoke the language", ["English", "French"], "none"),
]


@pytest.mark.parametrize("forest_tokens", [4096, 48])  # one forward; one per question or two
def test_score_many_equals_one_question_at_a_time_across_modes_and_edits(lm, forest_tokens):
    lm.clear()
    lm.edit(["The mother tongue of Danielle Darrieux is English.",
             "The Eiffel Tower is located in Rome.", "Toyota is owned by BMW."])
    alone = [lm.score(q, c, mode=m) for q, c, m in QUESTIONS]
    many = lm.score_many([q for q, _, _ in QUESTIONS], [c for _, c, _ in QUESTIONS],
                         mode=[m for _, _, m in QUESTIONS], forest_tokens=forest_tokens)
    assert [r.mode for r in many] == ["ptokens", "prompt", "ptokens", "none"]
    for a, b in zip(alone, many, strict=True):
        assert (a.edit.edit.id if a.edit else None) == (b.edit.edit.id if b.edit else None)
        assert [d.edit.id for d in a.distractors] == [d.edit.id for d in b.distractors]
        assert a.prompt_tokens == b.prompt_tokens
        assert [s.candidate for s in a.scores] == [s.candidate for s in b.scores]
        for x, y in zip(a.scores, b.scores, strict=True):
            assert y.token_logprobs == pytest.approx(x.token_logprobs, abs=2e-4)
    assert many[0].edit is not None and many[3].edit is None


def test_score_many_refuses_mismatched_lists_and_bad_candidates(lm):
    with pytest.raises(InvalidInputError, match="one candidate list per question"):
        lm.score_many(["a question?", "another?"], [["x"]])
    with pytest.raises(InvalidInputError, match="modes"):
        lm.score_many(["a question?"], [["x"]], mode=["prompt", "none"])
    with pytest.raises(InvalidInputError, match="candidates"):
        lm.score_many(["a question?", "another?"], [["x"], []])


ASKS = [
    ("The mother tongue of Danielle Darrieux is", "ptokens"),
    ("Where is the Eiffel Tower? It is in the city of", "prompt"),
    ("Name three colours.", "none"),
    ("What language did Danielle Darrieux speak at home?", "prompt"),
    ("Toyota is owned by", "ptokens"),
]


@pytest.mark.parametrize("batch_size, stop", [(16, ()), (2, (".",))])
def test_ask_many_equals_one_question_at_a_time(lm, batch_size, stop):
    lm.clear()
    lm.edit(["The mother tongue of Danielle Darrieux is English.",
             "The Eiffel Tower is located in Rome.", "Toyota is owned by BMW."])
    alone = [lm.ask(q, mode=m, max_new_tokens=12, stop=stop) for q, m in ASKS]
    many = lm.ask_many([q for q, _ in ASKS], mode=[m for _, m in ASKS], max_new_tokens=12,
                       stop=stop, batch_size=batch_size)
    for a, b in zip(alone, many, strict=True):
        assert (b.text, b.completion_tokens, b.finish_reason, b.prompt_tokens, b.mode) == \
            (a.text, a.completion_tokens, a.finish_reason, a.prompt_tokens, a.mode)
        assert (a.edit.edit.id if a.edit else None) == (b.edit.edit.id if b.edit else None)
    if stop:  # answers cut at "." left the batch at different steps
        assert len({a.completion_tokens for a in many}) > 1


def test_ask_many_validates_every_question_before_decoding(lm):
    with pytest.raises(InvalidInputError):
        lm.ask_many(["a fine question?", "   "], max_new_tokens=4)
    with pytest.raises(InvalidInputError, match="modes"):
        lm.ask_many(["a question?"], mode=["prompt", "none"])
    with pytest.raises(InvalidInputError, match="max_new_tokens"):
        lm.ask_many(["a question?"], max_new_tokens=0)
