"""Greedy decoding with a bf16 copy of the weights after an fp32 prefill
(editkit.runtime.mixed_decode), chosen behind `ask`/`stream` by `decode_dtype`."""
from __future__ import annotations

import pytest
import torch

from editkit import EditableLM, EditMemory, InvalidInputError
from editkit.runtime.generation import TextGenerator
from editkit.runtime.mixed_decode import decode_copy, greedy_mixed
from test_prefix_cache import _rome


def test_mixed_decoding_starts_with_the_fp32_token_and_mostly_agrees_on_the_real_model(
        default_model, default_ptokens) -> None:
    lm = EditableLM(default_model, default_ptokens, EditMemory(None), decode_dtype="bfloat16")
    assert lm.model.dtype == torch.float32 and lm.decode_model.dtype == torch.bfloat16
    assert not {p.data_ptr() for p in lm.model.parameters()} & {
        p.data_ptr() for p in lm.decode_model.parameters()}  # a copy, not a cast in place
    full_precision = TextGenerator(lm.model, lm.tokenizer)
    same = 0
    records = _rome(3)
    for r in records:
        p, _, _ = lm.prompt(r["questions"][0], mode="ptokens", fact=r["fact"])
        full = full_precision.generate(p.ids, ptokens=lm.ptokens, max_new_tokens=6).token_ids
        answer = lm.ask(r["questions"][0], mode="ptokens", fact=r["fact"], max_new_tokens=6)
        mixed = lm.generate_from(p, max_new_tokens=6)
        assert "".join(mixed) == answer.text
        assert mixed.token_ids[0] == full[0]  # the first token comes from the fp32 prefill
        assert len(mixed.token_ids) <= 6
        same += mixed.token_ids == full
    assert same >= len(records) - 1  # bf16 rounding may flip a near-tie later in one answer


def test_greedy_mixed_hands_every_token_over_and_stops_when_told(tiny_model) -> None:
    tok, model = tiny_model.tokenizer, tiny_model.model
    bf16 = decode_copy(model, "bfloat16")
    ids = tok("The Eiffel Tower is located in the city of").input_ids
    got: list[int] = []
    greedy_mixed(model, bf16, None, ids, max_new_tokens=5, emit=lambda t: got.append(t) is None)
    assert len(got) == 5
    first: list[int] = []
    greedy_mixed(model, bf16, None, ids, max_new_tokens=5,
                 emit=lambda t: first.append(t) and False)  # stop after the first token
    assert first == got[:1]


def test_bf16_decoding_streams_what_ask_returns(tiny_model, tiny_ptokens) -> None:
    lm = EditableLM(tiny_model, tiny_ptokens, EditMemory(None), decode_dtype="bfloat16")
    r = _rome(1)[0]
    q = r["questions"][0]
    answer = lm.ask(q, fact=r["fact"], max_new_tokens=6, stop=["never appears"])
    s = lm.stream(q, fact=r["fact"], max_new_tokens=6)
    assert "".join(s) == answer.text and s.completion_tokens == answer.completion_tokens == 6
    assert s.finish_reason == answer.finish_reason == "length"


def test_decode_dtype_is_validated(tiny_model, tiny_ptokens) -> None:
    with pytest.raises(InvalidInputError, match="decode_dtype"):
        EditableLM(tiny_model, tiny_ptokens, EditMemory(None), decode_dtype="int8")
    with pytest.raises(InvalidInputError, match="decode_dtype"):
        decode_copy(tiny_model.model, "float64")
