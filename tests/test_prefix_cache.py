"""The prefix KV cache gives the same answers and scores as recomputing the whole prompt."""
from __future__ import annotations

import json

import pytest
from conftest import shared_data

from editkit import EditableLM, EditMemory
from editkit.runtime.prefix_cache import PrefixCache


def _rome(n: int) -> list[dict]:
    recs = json.loads((shared_data() / "counterfact" / "counterfact-rome-test.json").read_text())
    out = []
    for r in recs[:n]:
        rw = r["requested_rewrite"]
        q = rw["prompt"].format(rw["subject"])
        out.append({"fact": f"{q} {rw['target_new']['str']}.",
                    "questions": [q, r["paraphrase_prompts"][0]],
                    "cands": [rw["target_new"]["str"], rw["target_true"]["str"]]})
    return out


@pytest.mark.parametrize("mode", ["ike", "ptokens", "prompt"])
def test_cached_prefix_answers_and_scores_equal_the_uncached_ones_on_the_real_model(
        default_model, default_ptokens, mode: str) -> None:
    plain = EditableLM(default_model, default_ptokens, EditMemory(None))
    cached = EditableLM(default_model, default_ptokens, EditMemory(None), demos=plain.demos,
                        prefix_cache=2)
    for r in _rome(1):
        for q in r["questions"]:  # the second question about the edit hits the cache
            a = plain.ask(q, fact=r["fact"], mode=mode, max_new_tokens=6)
            b = cached.ask(q, fact=r["fact"], mode=mode, max_new_tokens=6)
            assert a.text == b.text
            s1 = plain.score(q, r["cands"], fact=r["fact"], mode=mode).as_dict()
            s2 = cached.score(q, r["cands"], fact=r["fact"], mode=mode).as_dict()
            assert max(abs(s1[c] - s2[c]) for c in s1) < 1e-4
    assert cached.prefix_cache.hits >= 3 and cached.prefix_cache.misses == 1


def test_cache_is_lru_bounded_and_left_at_the_prefix_length(default_model) -> None:
    cache = PrefixCache(default_model.model, None, max_entries=2)
    tok = default_model.tokenizer
    prompts = [tok(f"Fact number {i}: the sky is green. Question:").input_ids for i in range(3)]
    eos = [tok.eos_token_id]
    first = cache.greedy(prompts[0], len(prompts[0]) - 2, None, max_new_tokens=3, eos_ids=eos)
    again = cache.greedy(prompts[0], len(prompts[0]) - 2, None, max_new_tokens=3, eos_ids=eos)
    assert first == again and cache.hits == 1
    for p in prompts[1:]:
        cache.greedy(p, len(p) - 2, None, max_new_tokens=2, eos_ids=eos)
    assert len(cache._entries) == 2  # the oldest prefix was evicted
    for key, kv in cache._entries.items():
        assert kv.get_seq_length() == len(key) - 1  # cropped back after every call


def test_prefix_cache_size_must_be_positive(default_model) -> None:
    with pytest.raises(ValueError):
        PrefixCache(default_model.model, None, max_entries=0)


@pytest.mark.parametrize(("mode", "chat"), [("ptokens", False), ("prompt", True)])
def test_fresh_edits_reuse_the_edit_independent_head_and_score_as_without_it(
        default_model, default_ptokens, mode: str, chat: bool) -> None:
    from editkit.runtime import scoring as inference
    from editkit.layouts import Mode

    lm = EditableLM(default_model, default_ptokens, EditMemory(None), chat=chat)
    for r in _rome(3):  # three different facts: only the head (BOS/chat head + [B]*m) is shared
        q = r["questions"][0]
        got = lm.score(q, r["cands"], fact=r["fact"], mode=mode)
        p, _, _ = lm.prompt(q, mode=mode, fact=r["fact"])
        sep = "" if p.chat else " "
        pt = lm.ptokens if p.mode is Mode.PTOKENS else None
        want = inference.score_continuations(
            lm.model, pt, p.ids, [lm.layouts.text_ids(sep + c) for c in r["cands"]])
        assert p.head_len > 1
        for s, w in zip(got.scores, want):
            assert abs(s.mean_logprob - sum(w) / len(w)) < 1e-4
    assert lm._head_cache.misses == 1 and lm._head_cache.hits == 2
