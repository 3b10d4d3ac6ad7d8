"""Scoring with a shared prefix cache equals scoring each full sequence; generation never emits
P-Tokens."""
from __future__ import annotations

import torch

from editkit.runtime import scoring as inference


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


def test_packed_scoring_of_many_questions_matches_separate_full_forwards(default_model,
                                                                         default_ptokens):
    tok, model, pt = default_model.tokenizer, default_model.model, default_ptokens
    prefix = pt.begin_ids + tok("Toko Yasuda plays the piano.").input_ids + pt.end_ids + tok(
        "\n").input_ids
    questions = ["Toko Yasuda is incredible at", "John Lennon performs on the"]
    targets = [" piano", " the electric guitar"]
    items = [inference.ScoreItem(question=tok(q).input_ids, targets=[tok(t).input_ids
                                                                     for t in targets])
             for q in questions]
    got = inference.score_packed(model, pt, prefix, items)
    for item, row in zip(items, got):
        for target, score in zip(item.targets, row):
            want = _full_sequence_logprobs(model, pt, prefix + item.question, target)
            assert max(abs(a - b) for a, b in zip(score.logprobs, want)) < 1e-4
            ids = torch.tensor([prefix + item.question + target])
            with torch.no_grad():
                logits = model(inputs_embeds=pt.embed(ids)).logits[0]
            start = len(prefix) + len(item.question) - 1
            assert score.argmax == logits[start:start + len(target)].argmax(-1).tolist()


def test_hand_computed_nll_of_a_tiny_record_equals_the_scorer(default_model):
    tok, model = default_model.tokenizer, default_model.model
    prefix, target = tok("Paris is the capital of").input_ids, tok(" France").input_ids
    with torch.no_grad():
        logits = model(torch.tensor([prefix + target])).logits[0]
    by_hand = []
    for j, t in enumerate(target):
        row = logits[len(prefix) - 1 + j].double()
        by_hand.append(float(row[t] - torch.logsumexp(row, 0)))
    [[score]] = inference.score_packed(model, None, prefix[:-1],
                                       [inference.ScoreItem(question=prefix[-1:],
                                                            targets=[target])])
    assert abs(score.mean_logprob - sum(by_hand) / len(by_hand)) < 1e-4
