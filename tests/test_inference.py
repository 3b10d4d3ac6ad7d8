"""Scoring with a shared prefix cache equals scoring each full sequence; generation never emits
P-Tokens."""
from __future__ import annotations

import torch

from editkit import inference


def _full_sequence_logprobs(model, ptokens, prefix, cont):
    ids = torch.tensor([prefix + cont])
    with torch.no_grad():
        logp = torch.log_softmax(model(inputs_embeds=ptokens.embed(ids)).logits[0].float(), -1)
    return [float(logp[len(prefix) - 1 + j, t]) for j, t in enumerate(cont)]


def test_prefix_cached_batched_scoring_matches_full_forward(default_model, default_ptokens):
    tok, model, pt = default_model.tokenizer, default_model.model, default_ptokens
    prefix = pt.begin_ids + tok("Toko Yasuda plays the piano.").input_ids + pt.end_ids + tok(
        "\nToko Yasuda is incredible at").input_ids
    conts = [tok(" the piano").input_ids, tok(" guitar").input_ids,
             tok(" the electric violin solo").input_ids]
    got = inference.score_continuations(model, pt, prefix, conts)
    for c, g in zip(conts, got):
        want = _full_sequence_logprobs(model, pt, prefix, c)
        assert len(g) == len(c)
        assert max(abs(a - b) for a, b in zip(g, want)) < 1e-4


def test_generation_with_ptokens_returns_only_vocabulary_ids(default_model, default_ptokens):
    tok, pt = default_model.tokenizer, default_ptokens
    prefix = pt.begin_ids + tok("Toko Yasuda plays the piano.").input_ids + pt.end_ids
    new = inference.generate(default_model.model, tok, pt, prefix, max_new_tokens=12)
    assert 1 <= len(new) <= 12
    assert max(new) < pt.layer.first_id
