"""EditableLM on the real default model: edit → ask/score, modes, streaming, bad input."""
from __future__ import annotations

import pytest

from editkit import (
    Answer,
    AnswerStream,
    EditableLM,
    EditMemory,
    FactTooLongError,
    InvalidInputError,
    UnknownModeError,
)
from editkit.ike import DemoStore

DARRIEUX = "The mother tongue of Danielle Darrieux is English."  # CounterFact record 0
DARRIEUX_Q = "The mother tongue of Danielle Darrieux is"
EIFFEL = "The Eiffel Tower is located in Rome."
EIFFEL_Q = "The Eiffel Tower is located in the city of"


def test_from_pretrained_defaults_to_ptokens_mode_on_the_embedded_model(tmp_path):
    lm = EditableLM.from_pretrained(memory=tmp_path / "m.sqlite", device="cpu")
    assert lm.mode.value == "ptokens" and lm.name == "SmolLM2-135M-Instruct"
    from editkit.editable import DEFAULT_M

    assert lm.ptokens.m == DEFAULT_M and "shipped" in lm.ptokens_source
    assert lm.ptokens.config.trained  # the trained P-Tokens that ship in the package
    answer = lm.edit(DARRIEUX).ask(DARRIEUX_Q, max_new_tokens=4)
    assert isinstance(answer, Answer) and answer.edit.edit.text == DARRIEUX
    assert answer.text.startswith("English")


def test_edit_changes_the_preferred_answer_in_prompt_mode(lm):
    before = lm.score(DARRIEUX_Q, ["English", "French"])
    assert before.best == "French" and before.edit is None
    after = lm.edit(DARRIEUX).score(DARRIEUX_Q, ["English", "French"])
    assert after.best == "English" and after.edit.edit.text == DARRIEUX
    assert after.prompt_tokens > before.prompt_tokens


def test_eiffel_example_flips_in_prompt_mode_with_the_chat_template(lm):
    lm.edit(EIFFEL)
    chat = lm.score(EIFFEL_Q, ["Rome", "Paris"], mode="prompt", chat=True)
    assert chat.best == "Rome"
    # Inline, this 135M model's prior for Paris is stronger than the in-context edit; recorded
    # here so a better model or trained P-Tokens show up as a change.
    inline = lm.score(EIFFEL_Q, ["Rome", "Paris"], mode="prompt")
    assert inline.as_dict()["Paris"] > inline.as_dict()["Rome"]


def test_unrelated_question_is_unaffected_by_stored_edits(lm):
    q, cands = "The capital of Japan is", ["Tokyo", "Rome"]
    for mode in ("prompt", "ptokens"):
        before = lm.score(q, cands, mode=mode).as_dict()
        lm.edit(EIFFEL)
        after = lm.score(q, cands, mode=mode)
        assert after.edit is None and after.as_dict() == before
        lm.clear()


def test_best_retrieved_edit_is_the_fact_and_the_rest_are_distractors(lm):
    lm.retrieval.threshold = 0.3
    lm.edit([EIFFEL, "The Eiffel Tower was designed by Leonardo da Vinci.",
             "Toko Yasuda plays the piano."])
    p, edit, others = lm.prompt(EIFFEL_Q, mode="ptokens")
    assert edit.edit.text == EIFFEL
    assert [o.edit.text for o in others] == ["The Eiffel Tower was designed by Leonardo da Vinci."]
    assert p.fact == EIFFEL and p.distractors == (others[0].edit.text,)


def test_every_mode_answers_and_reports_prompt_tokens(lm, small_demo_file):
    lm._demos = DemoStore.from_file(small_demo_file)
    lm.edit(DARRIEUX)
    tokens = {}
    for mode in ("none", "prompt", "ptokens", "ike"):
        a = lm.ask(DARRIEUX_Q, mode=mode, max_new_tokens=3)
        assert a.mode == mode and a.completion_tokens >= 1
        tokens[mode] = a.prompt_tokens
        assert (a.edit is None) == (mode == "none")
    assert tokens["none"] < tokens["ptokens"] == tokens["prompt"] < tokens["ike"]
    assert tokens["ike"] > 10 * tokens["ptokens"]


def test_stream_yields_the_text_of_ask_and_honours_stop_and_cancel_on_the_real_model(lm):
    lm.edit(DARRIEUX)
    whole = lm.ask(DARRIEUX_Q, max_new_tokens=6, stop=())  # no default stop: 6 whole tokens
    s = lm.stream(DARRIEUX_Q, max_new_tokens=6, stop=())
    assert isinstance(s, AnswerStream) and isinstance(whole, Answer)
    pieces = list(s)
    assert len(pieces) >= 2 and "".join(pieces) == whole.text == s.text
    assert s.edit.edit.text == DARRIEUX and s.prompt_tokens == whole.prompt_tokens
    assert s.finish_reason == whole.finish_reason and s.completion_tokens == whole.completion_tokens
    word = whole.text.split()[1]  # a stop sequence the greedy answer is known to contain
    cut = whole.text[: whole.text.index(word)].strip()
    stopped = lm.ask(DARRIEUX_Q, max_new_tokens=6, stop=[word])
    assert stopped.text == cut and stopped.finish_reason == "stop"
    assert "".join(lm.stream(DARRIEUX_Q, max_new_tokens=6, stop=[word])) == cut
    with lm.stream(DARRIEUX_Q, max_new_tokens=200) as long:
        assert next(long)
    assert long.finish_reason is None and long.completion_tokens < 200  # cancelled on exit


def test_ask_has_no_stream_flag_any_more(lm):
    with pytest.raises(TypeError):
        lm.ask(DARRIEUX_Q, stream=True)


def test_the_context_check_counts_the_new_tokens(tiny_model_dir, tiny_ptokens):
    from editkit.loading import load_model

    loaded = load_model(tiny_model_dir, device="cpu")
    loaded.model.config.max_position_embeddings = 40
    small = EditableLM(loaded, tiny_ptokens, EditMemory(None), mode="none")
    room = 40 - len(small.prompt(DARRIEUX_Q)[0])
    assert room > 1
    assert small.ask(DARRIEUX_Q, max_new_tokens=room).completion_tokens <= room
    for call in (small.ask, small.stream):
        with pytest.raises(InvalidInputError, match="context of 40"):
            call(DARRIEUX_Q, max_new_tokens=room + 1)  # the prompt fits, the answer would not
    with pytest.raises(InvalidInputError, match="context of 40"):
        small.prompt(DARRIEUX_Q, max_new_tokens=room + 1)
    with pytest.raises(InvalidInputError, match="context of 40"):
        small.score(DARRIEUX_Q, ["English", "very " * (room + 2) + "English"])  # a long candidate


def test_explicit_fact_bypasses_memory(lm):
    r = lm.score(DARRIEUX_Q, ["English", "French"], fact=DARRIEUX)
    assert r.best == "English" and r.edit is None and lm.edits() == []


def test_edits_persist_across_instances_sharing_a_memory_file(default_model, default_ptokens,
                                                              tmp_path):
    path = tmp_path / "edits.sqlite"
    EditableLM(default_model, default_ptokens, EditMemory(path)).edit(DARRIEUX)
    again = EditableLM(default_model, default_ptokens, EditMemory(path), mode="prompt")
    assert [e.text for e in again.edits()] == [DARRIEUX]
    assert again.score(DARRIEUX_Q, ["English", "French"]).best == "English"
    assert again.forget(again.edits()[0].id).text == DARRIEUX and again.edits() == []


@pytest.mark.parametrize("call,err", [
    (lambda lm: lm.ask(""), InvalidInputError),
    (lambda lm: lm.ask("   "), InvalidInputError),
    (lambda lm: lm.ask(123), InvalidInputError),
    (lambda lm: lm.ask("q", mode="rome"), UnknownModeError),
    (lambda lm: lm.ask("q", max_new_tokens=0), InvalidInputError),
    (lambda lm: lm.ask("x" * 5000), FactTooLongError),
    (lambda lm: lm.ask("q", do_sample=True, temperature=0), InvalidInputError),
    (lambda lm: lm.score("q", []), InvalidInputError),
    (lambda lm: lm.score("q", "Paris"), InvalidInputError),
    (lambda lm: lm.score("q", ["Paris", ""]), InvalidInputError),
    (lambda lm: lm.edit("y" * 1001), FactTooLongError),
    (lambda lm: lm.edit(["fine fact.", None]), InvalidInputError),
    (lambda lm: lm.forget(""), InvalidInputError),
])
def test_bad_input_gets_a_typed_error_and_loses_nothing(lm, call, err):
    lm.edit(DARRIEUX)
    with pytest.raises(err):
        call(lm)
    assert [e.text for e in lm.edits()] == [DARRIEUX]


def test_bad_settings_are_refused_before_loading(tmp_path):
    with pytest.raises(InvalidInputError, match="top_k"):
        EditableLM.from_pretrained(top_k=0)
    with pytest.raises(UnknownModeError):
        EditableLM.from_pretrained(mode="memit")
