"""Packed scoring equals scoring each full sequence; the compatibility shims (editkit.compat)
give the same logits whether a model honours, refuses or ignores `logits_to_keep`."""
from __future__ import annotations

import functools

import pytest
import torch

from editkit import compat
from editkit.loading import load_model
from editkit.runtime import scoring


def _full_sequence_logprobs(model, ptokens, prefix, cont):
    ids = torch.tensor([prefix + cont])
    with torch.no_grad():
        logp = torch.log_softmax(model(inputs_embeds=ptokens.embed(ids)).logits[0].float(), -1)
    return [float(logp[len(prefix) - 1 + j, t]) for j, t in enumerate(cont)]


def test_batched_scoring_of_continuations_matches_full_forwards(tiny_model, tiny_ptokens):
    tok, model, pt = tiny_model.tokenizer, tiny_model.model, tiny_ptokens
    prefix = pt.begin_ids + tok("Toko Yasuda plays the piano.").input_ids + pt.end_ids + tok(
        "\nToko Yasuda is incredible at").input_ids
    conts = [tok(" the piano").input_ids, tok(" guitar").input_ids,
             tok(" the electric violin solo").input_ids]
    got = scoring.score_continuations(model, pt, prefix, conts)
    for c, g in zip(conts, got, strict=True):
        want = _full_sequence_logprobs(model, pt, prefix, c)
        assert len(g) == len(c)
        assert max(abs(a - b) for a, b in zip(g, want, strict=True)) < 1e-4


def test_packed_scoring_of_many_questions_matches_separate_full_forwards(tiny_model,
                                                                         tiny_ptokens):
    tok, model, pt = tiny_model.tokenizer, tiny_model.model, tiny_ptokens
    prefix = pt.begin_ids + tok("Toko Yasuda plays the piano.").input_ids + pt.end_ids + tok(
        "\n").input_ids
    questions = ["Toko Yasuda is incredible at", "John Lennon performs on the"]
    targets = [" piano", " the electric guitar"]
    items = [scoring.ScoreItem(question=tok(q).input_ids, targets=[tok(t).input_ids
                                                                   for t in targets])
             for q in questions]
    got = scoring.score_packed(model, pt, prefix, items)
    for item, row in zip(items, got, strict=True):
        for target, score in zip(item.targets, row, strict=True):
            want = _full_sequence_logprobs(model, pt, prefix + item.question, target)
            assert max(abs(a - b) for a, b in zip(score.logprobs, want, strict=True)) < 1e-4
            ids = torch.tensor([prefix + item.question + target])
            with torch.no_grad():
                logits = model(inputs_embeds=pt.embed(ids)).logits[0]
            start = len(prefix) + len(item.question) - 1
            assert score.argmax == logits[start:start + len(target)].argmax(-1).tolist()


def test_several_packed_trees_in_one_forward_equal_one_forward_per_tree(tiny_model,
                                                                       tiny_ptokens):
    """Training packs a batch's trees side by side (block-diagonal mask, positions restarting
    in each): each tree must get what it gets alone, P-Token rows and gradients included."""
    tok, model, pt = tiny_model.tokenizer, tiny_model.model, tiny_ptokens
    trees = []
    for fact, questions in (("Toko Yasuda plays the piano.", ["Toko Yasuda is good at"]),
                            ("Paris is in Italy.", ["Paris is located in", "The Seine is in"]),
                            ("", ["Danielle Darrieux speaks"])):
        prefix = pt.begin_ids + tok(fact).input_ids + pt.end_ids
        trees.append((prefix, [scoring.ScoreItem(question=tok(q).input_ids,
                                                 targets=[tok(" Italy").input_ids,
                                                          tok(" the piano").input_ids])
                               for q in questions]))
    pt.layer.weight.requires_grad_(True)
    try:
        together = scoring.packed_logprobs_many(model, pt, trees)
        grad_together = torch.autograd.grad(sum(d.sum() for t in together for it in t
                                                for d in it), pt.layer.weight)[0]
        alone = [scoring.packed_logprobs(model, pt, pre, items) for pre, items in trees]
        grad_alone = torch.autograd.grad(sum(d.sum() for t in alone for it in t for d in it),
                                         pt.layer.weight)[0]
    finally:
        pt.layer.weight.requires_grad_(False)
    assert [len(t) for t in together] == [1, 2, 1]
    for tree_a, tree_b in zip(together, alone, strict=True):
        for item_a, item_b in zip(tree_a, tree_b, strict=True):
            for a, b in zip(item_a, item_b, strict=True):
                assert torch.allclose(a, b, atol=1e-4)
    # float rounding only: sums over the whole vocabulary make the gradient entries large (~30)
    assert (grad_together - grad_alone).abs().max() <= 2e-4 * grad_alone.abs().max()


def test_hand_computed_nll_of_a_tiny_record_equals_the_scorer_on_the_real_model(default_model):
    tok, model = default_model.tokenizer, default_model.model
    prefix, target = tok("Paris is the capital of").input_ids, tok(" France").input_ids
    with torch.no_grad():
        logits = model(torch.tensor([prefix + target])).logits[0]
    by_hand = []
    for j, t in enumerate(target):
        row = logits[len(prefix) - 1 + j].double()
        by_hand.append(float(row[t] - torch.logsumexp(row, 0)))
    [[score]] = scoring.score_packed(model, None, prefix[:-1],
                                     [scoring.ScoreItem(question=prefix[-1:], targets=[target])])
    assert abs(score.mean_logprob - sum(by_hand) / len(by_hand)) < 1e-4


# ---- compat ------------------------------------------------------------------------------
def ignoring_logits_to_keep(model):
    """Patch `model` so its forward swallows `logits_to_keep` (a `**kwargs` that drops it) and
    projects every position, as some architectures do. Returns the model."""
    forward = model.forward

    @functools.wraps(forward)
    def swallow(*args, logits_to_keep=None, **kwargs):
        return forward(*args, **kwargs)

    model.forward = swallow
    return model


def refusing_logits_to_keep(model):
    """Patch `model` so its forward has no `logits_to_keep` parameter (a TypeError if given)."""
    forward = model.forward

    def strict(inputs_embeds=None, attention_mask=None, position_ids=None, use_cache=None,
               cache=None, **extra):
        if extra:
            raise TypeError(f"forward() got an unexpected keyword argument {next(iter(extra))!r}")
        return forward(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                       position_ids=position_ids, use_cache=use_cache, cache=cache)

    model.forward = strict
    return model


@pytest.mark.parametrize("patch", [ignoring_logits_to_keep, refusing_logits_to_keep])
def test_forward_logits_returns_the_kept_rows_whatever_the_model_does_with_the_argument(
        tiny_model, tiny_model_dir, patch):
    tok = tiny_model.tokenizer
    ids = torch.tensor([tok("The Eiffel Tower is located in the city of").input_ids])
    keep = [2, 5, ids.shape[1] - 1]
    honest = tiny_model.model
    odd = patch(load_model(tiny_model_dir, device="cpu").model)
    with torch.no_grad():
        want = honest(input_ids=ids).logits[0][keep]
        got = compat.forward_logits(odd, odd.get_input_embeddings()(ids), keep=keep)
        last = compat.forward_logits(odd, odd.get_input_embeddings()(ids), keep=1)
    assert got.shape == want.shape and torch.allclose(got, want, atol=1e-5)
    assert last.shape[0] == 1 and torch.allclose(last[0], want[-1], atol=1e-5)


def test_packed_scoring_is_right_on_a_model_that_ignores_logits_to_keep(tiny_model,
                                                                        tiny_model_dir,
                                                                        tiny_ptokens):
    tok = tiny_model.tokenizer
    odd = ignoring_logits_to_keep(load_model(tiny_model_dir, device="cpu").model)
    prefix = tok("Toko Yasuda plays the piano. Toko Yasuda is incredible at").input_ids
    conts = [tok(" the piano").input_ids, tok(" guitar").input_ids]
    want = scoring.score_continuations(tiny_model.model, None, prefix, conts)
    got = scoring.score_continuations(odd, None, prefix, conts)
    assert max(abs(a - b) for w, g in zip(want, got, strict=True)
               for a, b in zip(w, g, strict=True)) < 1e-5


def test_a_forward_type_error_that_is_not_about_logits_to_keep_is_not_swallowed(
        tiny_model_dir):
    model = load_model(tiny_model_dir, device="cpu").model

    def broken(*args, **kwargs):
        raise TypeError("something else went wrong")

    model.forward = broken
    with pytest.raises(TypeError, match="something else"):
        compat.forward_logits(model, torch.zeros(1, 3, 32), keep=1)


def test_model_settings_are_read_from_their_configs(tiny_model, default_model):
    tok = tiny_model.tokenizer
    assert compat.eos_ids(tiny_model.model, tok) == [tok.eos_token_id]
    assert compat.context_length(tiny_model.model) == 2048
    assert compat.context_length(default_model.model) == \
        default_model.model.config.max_position_embeddings
    assert compat.cache_kw(tiny_model.model) in ("cache", "past_key_values")


def test_cache_crop_and_cast_act_on_every_layer(tiny_model):
    model = tiny_model.model
    cache = compat.new_cache(model)
    ids = torch.tensor([tiny_model.tokenizer("one two three four").input_ids])
    with torch.no_grad():
        compat.forward_logits(model, model.get_input_embeddings()(ids), keep=1, cache=cache)
    assert cache.get_seq_length() == ids.shape[1]
    compat.crop_cache(cache, 2)
    assert cache.get_seq_length() == 2
    compat.cast_cache(cache, torch.bfloat16)
    assert all(layer.keys.dtype == torch.bfloat16 and layer.values.dtype == torch.bfloat16
               for layer in cache.layers)
