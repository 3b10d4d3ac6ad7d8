"""The prefix KV cache gives the same answers and scores as recomputing the whole prompt, and
can never serve keys and values computed with other P-Tokens or logits from the wrong rows."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import data_file
from editkit import EditableLM, EditMemory, InvalidInputError
from editkit.ike import DemoStore
from editkit.loading import load_model
from editkit.ptokens import PTokens
from editkit.runtime import scoring
from editkit.runtime.prefix_cache import PrefixCache
from test_inference import ignoring_logits_to_keep


def _rome(n: int) -> list[dict]:
    recs = json.loads(data_file("counterfact", "counterfact-rome-test.json").read_text())
    out = []
    for r in recs[:n]:
        rw = r["requested_rewrite"]
        q = rw["prompt"].format(rw["subject"])
        out.append({"fact": f"{q} {rw['target_new']['str']}.",
                    "questions": [q, r["paraphrase_prompts"][0]],
                    "cands": [rw["target_new"]["str"], rw["target_true"]["str"]]})
    return out


def _assert_cached_equals_uncached(plain: EditableLM, cached: EditableLM, mode: str) -> None:
    for r in _rome(1):
        for q in r["questions"]:  # the second question about the edit hits the cache
            a = plain.ask(q, fact=r["fact"], mode=mode, max_new_tokens=6)
            b = cached.ask(q, fact=r["fact"], mode=mode, max_new_tokens=6)
            assert a.text == b.text and a.completion_tokens == b.completion_tokens
            s1 = plain.score(q, r["cands"], fact=r["fact"], mode=mode).as_dict()
            s2 = cached.score(q, r["cands"], fact=r["fact"], mode=mode).as_dict()
            assert max(abs(s1[c] - s2[c]) for c in s1) < 1e-4
    assert cached.prefix_cache.hits >= 3 and cached.prefix_cache.misses == 1


def test_cached_ike_prefix_answers_and_scores_equal_the_uncached_ones_on_the_real_model(
        default_model, default_ptokens, small_demo_file) -> None:
    demos = DemoStore.from_file(small_demo_file)
    plain = EditableLM(default_model, default_ptokens, EditMemory(None), demos=demos)
    cached = EditableLM(default_model, default_ptokens, EditMemory(None), demos=demos,
                        prefix_cache=2)
    _assert_cached_equals_uncached(plain, cached, "ike")


@pytest.mark.parametrize("mode", ["ike", "ptokens", "prompt"])
def test_cached_prefix_answers_and_scores_equal_the_uncached_ones(
        tiny_model, tiny_ptokens, small_demo_file, mode: str) -> None:
    demos = DemoStore.from_file(small_demo_file)
    plain = EditableLM(tiny_model, tiny_ptokens, EditMemory(None), demos=demos)
    cached = EditableLM(tiny_model, tiny_ptokens, EditMemory(None), demos=demos,
                        prefix_cache=2)
    _assert_cached_equals_uncached(plain, cached, mode)


def test_cached_stream_equals_the_uncached_answer(tiny_model, tiny_ptokens) -> None:
    plain = EditableLM(tiny_model, tiny_ptokens, EditMemory(None))
    cached = EditableLM(tiny_model, tiny_ptokens, EditMemory(None), prefix_cache=2)
    r = _rome(1)[0]
    q = r["questions"][0]
    s = cached.stream(q, fact=r["fact"], max_new_tokens=6)
    assert "".join(s) == plain.ask(q, fact=r["fact"], max_new_tokens=6).text
    assert cached.prefix_cache.misses == 1


def test_cache_is_lru_bounded_and_left_at_the_prefix_length(tiny_model) -> None:
    cache = PrefixCache(tiny_model.model, max_entries=2)
    tok = tiny_model.tokenizer
    prompts = [tok(f"Fact number {i}: the sky is green. Question:").input_ids for i in range(3)]

    def run(ids: list[int], n: int) -> list[int]:
        out: list[int] = []
        cache.greedy(ids, len(ids) - 2, None, max_new_tokens=n,
                     emit=lambda t: out.append(t) is None)
        return out

    first, again = run(prompts[0], 3), run(prompts[0], 3)
    assert first == again and len(first) == 3 and cache.hits == 1
    for p in prompts[1:]:
        run(p, 2)
    assert len(cache._entries) == 2  # the oldest prefix was evicted
    for key, kv in cache._entries.items():
        assert kv.get_seq_length() == len(key) - 1  # cropped back after every call


@pytest.mark.parametrize("size", [0, -1, 1.5, True])
def test_prefix_cache_size_must_be_a_positive_int(tiny_model, size) -> None:
    with pytest.raises(InvalidInputError, match="prefix_cache"):
        PrefixCache(tiny_model.model, max_entries=size)


@pytest.mark.parametrize(("mode", "chat"), [("ptokens", False), ("prompt", True)])
def test_fresh_edits_reuse_the_edit_independent_head_and_score_as_without_it(
        tiny_model, tiny_ptokens, mode: str, chat: bool) -> None:
    lm = EditableLM(tiny_model, tiny_ptokens, EditMemory(None), chat=chat)
    for r in _rome(3):  # three different facts: only the head (BOS/chat head + [B]*m) is shared
        q = r["questions"][0]
        got = lm.score(q, r["cands"], fact=r["fact"], mode=mode)
        p, _, _ = lm.prompt(q, mode=mode, fact=r["fact"])
        want = scoring.score_continuations(
            lm.model, lm.engine._ptokens_for(p), p.ids,
            [lm.layouts.target_ids(c, chat=p.chat) for c in r["cands"]])
        assert p.head_len > 1
        for s, w in zip(got.scores, want, strict=True):
            assert abs(s.mean_logprob - sum(w) / len(w)) < 1e-4
    assert lm.scorer.head_cache.misses == 1 and lm.scorer.head_cache.hits == 2


def test_prefix_cache_scores_right_on_a_model_that_ignores_logits_to_keep(
        tiny_model, tiny_model_dir, tiny_ptokens) -> None:
    # A forward that swallows `logits_to_keep` projects every fed position; the cached scorer
    # must still read the rows of the target positions (it used to index the full logits with
    # the kept-row numbers and return wrong scores, silently).
    odd = load_model(tiny_model_dir, device="cpu")
    ignoring_logits_to_keep(odd.model)
    honest = EditableLM(tiny_model, tiny_ptokens, EditMemory(None))
    r = _rome(1)[0]
    for prefix_cache in (0, 2):  # the per-edit prefix cache, and the always-on head cache
        lm = EditableLM(odd, tiny_ptokens, EditMemory(None), prefix_cache=prefix_cache)
        for q in r["questions"]:
            want = honest.score(q, r["cands"], fact=r["fact"]).as_dict()
            got = lm.score(q, r["cands"], fact=r["fact"]).as_dict()
            assert max(abs(want[c] - got[c]) for c in want) < 1e-5


def _other_ptokens(tiny_model, like: PTokens, seed: int) -> PTokens:
    torch.manual_seed(seed)
    return PTokens.create(tiny_model.model, tiny_model.tokenizer, name=tiny_model.name,
                          m=like.m, init="random")


def test_swapped_ptokens_never_get_the_old_sets_cached_kv(tiny_model, tiny_ptokens) -> None:
    r = _rome(1)[0]
    q = r["questions"][0]
    other = _other_ptokens(tiny_model, tiny_ptokens, seed=1)
    lm = EditableLM(tiny_model, tiny_ptokens, EditMemory(None), prefix_cache=2)
    before = lm.score(q, r["cands"], fact=r["fact"]).as_dict()
    lm.ask(q, fact=r["fact"], max_new_tokens=2)  # fills the prefix cache with the first set
    lm.ptokens = other
    assert lm.layouts.ptokens is other  # one copy: the builder follows the assignment
    fresh = EditableLM(tiny_model, other, EditMemory(None))
    after = lm.score(q, r["cands"], fact=r["fact"]).as_dict()
    assert after == pytest.approx(fresh.score(q, r["cands"], fact=r["fact"]).as_dict(),
                                  abs=1e-5)
    assert after != pytest.approx(before, abs=1e-5)
    assert lm.ask(q, fact=r["fact"], max_new_tokens=4).text == fresh.ask(
        q, fact=r["fact"], max_new_tokens=4).text
    with pytest.raises(InvalidInputError, match="PTokens"):
        lm.ptokens = "my-ptokens"


def test_ptokens_changed_in_place_miss_the_cache(tiny_model, tiny_ptokens) -> None:
    r = _rome(1)[0]
    q = r["questions"][0]
    pt = _other_ptokens(tiny_model, tiny_ptokens, seed=2)
    lm = EditableLM(tiny_model, pt, EditMemory(None))
    lm.score(q, r["cands"], fact=r["fact"])
    with torch.no_grad():
        pt.layer.weight.mul_(3.0)  # e.g. a training step on the same object
    got = lm.score(q, r["cands"], fact=r["fact"]).as_dict()
    p, _, _ = lm.prompt(q, fact=r["fact"])
    want = scoring.score_continuations(lm.model, pt, p.ids,
                                       [lm.layouts.target_ids(c) for c in r["cands"]])
    assert [got[c] for c in r["cands"]] == pytest.approx([sum(w) / len(w) for w in want],
                                                         abs=1e-5)
    assert lm.scorer.head_cache.misses == 2
