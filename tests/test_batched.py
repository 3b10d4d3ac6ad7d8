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


def test_micro_batcher_groups_concurrent_requests_by_budget_and_returns_each_its_own(
        tiny_model):
    import threading

    from editkit.runtime.batching import MicroBatcher
    from editkit.runtime.generation import TextGenerator

    gen = TextGenerator(tiny_model.model, tiny_model.tokenizer)
    batcher = MicroBatcher(gen, window_s=0.3)
    prompts = [[1, 502, 1203], [1, 77], [1, 9000, 12, 13, 14], [1, 300]]
    budgets = [5, 5, 3, 5]  # the 3-token request cannot share the 5-token batch
    alone = [gen.generate(p, max_new_tokens=k) for p, k in zip(prompts, budgets)]
    out: list = [None] * len(prompts)

    def call(i: int) -> None:
        out[i] = batcher.generate(prompts[i], max_new_tokens=budgets[i])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert [g.token_ids for g in out] == [g.token_ids for g in alone]
    assert [g.text for g in out] == [g.text for g in alone]
    assert batcher.requests == 4 and batcher.batches == 2

    with pytest.raises(InvalidInputError, match="stop"):
        batcher.generate([1, 2], stop=".")
    with pytest.raises(InvalidInputError, match="max_new_tokens"):  # raised in every caller
        batcher.generate([1, 2], max_new_tokens=0)
