"""Greedy decoding with a bf16 copy of the weights after an fp32 prefill (editkit.runtime.mixed_decode)."""
from __future__ import annotations

import pytest
import torch
from test_prefix_cache import _rome

from editkit import EditableLM, EditMemory, InvalidInputError
from editkit.runtime import scoring as inference
from editkit.runtime.mixed_decode import decode_copy, greedy_mixed


def test_mixed_decoding_starts_with_the_fp32_token_and_mostly_agrees_on_the_real_model(
        default_model, default_ptokens) -> None:
    lm = EditableLM(default_model, default_ptokens, EditMemory(None), decode_dtype="bfloat16")
    assert lm.model.dtype == torch.float32 and lm.decode_model.dtype == torch.bfloat16
    assert not {p.data_ptr() for p in lm.model.parameters()} & {
        p.data_ptr() for p in lm.decode_model.parameters()}  # a copy, not a cast in place
    same = 0
    records = _rome(3)
    for r in records:
        p, _, _ = lm.prompt(r["questions"][0], mode="ptokens", fact=r["fact"])
        full = inference.generate(lm.model, lm.tokenizer, lm.ptokens, p.ids, max_new_tokens=6)
        mixed = greedy_mixed(lm.model, lm.decode_model, lm.ptokens, p.ids, max_new_tokens=6,
                             eos_ids=lm._eos_ids())
        assert mixed[0] == full[0]  # the first token comes from the fp32 prefill itself
        assert len(mixed) <= 6
        same += mixed == full
        answer = lm.ask(r["questions"][0], mode="ptokens", fact=r["fact"], max_new_tokens=6)
        assert answer.text == lm.tokenizer.decode(mixed, skip_special_tokens=True).strip()
    assert same >= len(records) - 1  # bf16 rounding may flip a near-tie later in one answer


def test_decode_dtype_is_validated(default_model, default_ptokens) -> None:
    with pytest.raises(InvalidInputError, match="decode_dtype"):
        EditableLM(default_model, default_ptokens, EditMemory(None), decode_dtype="int8")
    with pytest.raises(InvalidInputError, match="decode_dtype"):
        decode_copy(default_model.model, "float64")
