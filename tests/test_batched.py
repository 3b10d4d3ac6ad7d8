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


def test_a_sequence_that_joins_a_running_batch_gets_what_it_gets_alone(lm):
    """Continuous batching on the real model: two rows decode, then two more (one with a longer
    prompt, so the running rows' caches get padded in front) join mid-way; one row leaves early."""
    lm.clear()
    lm.edit(["The mother tongue of Danielle Darrieux is English.",
             "The Eiffel Tower is located in Rome."])
    prompts = [lm.prompt(q, mode=m)[0] for q, m in ASKS[:4]]
    gen = lm.generator
    alone = [gen.generate(p.ids, ptokens=lm.ptokens, max_new_tokens=k, stop=s)
             for p, k, s in zip(prompts, [10, 3, 10, 10], [(), (), (), (".",)], strict=True)]
    rows = [gen.batch_row(p.ids, ptokens=lm.ptokens, max_new_tokens=k, stop=s)
            for p, k, s in zip(prompts, [10, 3, 10, 10], [(), (), (), (".",)], strict=True)]
    batch = gen.new_batch(lm.ptokens)
    batch.add(rows[:2])
    batch.step()
    batch.step()  # the 3-token row leaves here
    assert len(batch) == 1
    batch.add(rows[2:])
    assert len(batch) == 3
    while len(batch):
        batch.step()
    assert max(len(p.ids) for p in prompts[2:]) > len(prompts[0].ids)
    for r, a in zip(rows, alone, strict=True):
        assert r.left.is_set() and r.failure is None
        assert (r.result.token_ids, r.result.text, r.result.finish_reason) == \
            (a.token_ids, a.text, a.finish_reason)


def test_sampled_answers_follow_their_seed_alone_or_in_a_batch(lm):
    lm.clear()
    qs = ["Name a colour.", "The capital of France is", "My favourite food is"]
    kw = {"do_sample": True, "temperature": 1.3, "max_new_tokens": 8, "mode": "none"}
    alone = [lm.ask(q, seed=s, **kw).text for q, s in zip(qs, [1, 2, 3], strict=True)]
    assert lm.ask(qs[0], seed=1, **kw).text == alone[0]
    many = lm.ask_many(qs, seeds=[1, 2, 3], **kw)
    assert [a.text for a in many] == alone
    assert len({lm.ask(qs[0], seed=s, **kw).text for s in range(4)}) > 1  # seeds matter
    with pytest.raises(InvalidInputError, match="seed"):
        lm.ask(qs[0], seed="1", **kw)
    with pytest.raises(InvalidInputError, match="seeds"):
        lm.ask_many(qs, seeds=[1], **kw)


def test_sampler_keeps_only_the_top_k_or_top_p_tokens():
    import torch

    from editkit.runtime.generation import Sampler

    logits = torch.tensor([0.0, 3.0, 2.9, -1.0])
    gen = torch.Generator().manual_seed(0)
    assert {Sampler(1.0, 1, None, gen).choose(logits) for _ in range(20)} == {1}
    assert {Sampler(1.0, None, 0.3, gen).choose(logits) for _ in range(20)} == {1}
    assert {Sampler(1.0, 2, None, gen).choose(logits) for _ in range(50)} == {1, 2}
    assert {Sampler(50.0, None, None, gen).choose(logits) for _ in range(200)} == {0, 1, 2, 3}


def test_ask_many_takes_a_given_fact_and_distractors_per_question(lm):
    lm.clear()
    qs = ["The mother tongue of Danielle Darrieux is", "Toyota is owned by"]
    facts = ["The mother tongue of Danielle Darrieux is English.", None]
    dis = [["Toyota is owned by BMW."], None]
    alone = [lm.ask(q, fact=f, distractors=d, max_new_tokens=6, mode=m)
             for q, f, d, m in zip(qs, facts, dis, ["prompt", "none"], strict=True)]
    many = lm.ask_many(qs, facts=facts, distractors=dis, mode=["prompt", "none"],
                       max_new_tokens=6)
    assert [(a.text, a.prompt_tokens) for a in many] == [(a.text, a.prompt_tokens) for a in alone]
    with pytest.raises(InvalidInputError, match="facts"):
        lm.ask_many(qs, facts=facts[:1])


def test_micro_batcher_decodes_concurrent_requests_together_whatever_their_budgets(tiny_model):
    import threading

    from editkit.runtime.batching import MicroBatcher
    from editkit.runtime.generation import TextGenerator

    gen = TextGenerator(tiny_model.model, tiny_model.tokenizer)
    batcher = MicroBatcher(gen, window_s=0.3)
    prompts = [[1, 502, 1203], [1, 77], [1, 9000, 12, 13, 14], [1, 300]]
    budgets = [5, 5, 3, 5]
    temps = [None, 0.8, None, None]  # a sampled request shares the batch too
    alone = [gen.generate(p, max_new_tokens=k, temperature=t, seed=7)
             for p, k, t in zip(prompts, budgets, temps, strict=True)]
    out: list = [None] * len(prompts)

    def call(i: int) -> None:
        out[i] = batcher.generate(prompts[i], max_new_tokens=budgets[i], temperature=temps[i],
                                  seed=7)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert [g.token_ids for g in out] == [g.token_ids for g in alone]
    assert [g.text for g in out] == [g.text for g in alone]
    assert (batcher.requests, batcher.batches, batcher.steps) == (4, 1, 4)

    with pytest.raises(InvalidInputError, match="stop"):
        batcher.generate([1, 2], stop=".")
    with pytest.raises(InvalidInputError, match="max_new_tokens"):
        batcher.generate([1, 2], max_new_tokens=0)


def test_a_request_that_arrives_while_the_batcher_decodes_joins_the_running_batch(
        tiny_model, monkeypatch):
    import threading
    import time

    from editkit.runtime.batching import MicroBatcher
    from editkit.runtime.generation import TextGenerator

    gen = TextGenerator(tiny_model.model, tiny_model.tokenizer)
    batcher = MicroBatcher(gen, window_s=0.0)
    a_ids, b_ids = [1, 502, 1203], [1, 9000, 12, 13, 14, 15, 16]
    alone_a = gen.generate(a_ids, max_new_tokens=12)
    alone_b = gen.generate(b_ids, max_new_tokens=5)
    out: dict = {}
    late: list[threading.Thread] = []
    new_batch = gen.new_batch

    def batch_that_lets_b_arrive(ptokens):  # B's request comes in after the batch's 2nd step
        batch = new_batch(ptokens)
        step = batch.step

        def step_then_b_arrives() -> None:
            step()
            if batcher.steps == 1 and not late:
                late.append(threading.Thread(target=lambda: out.__setitem__(
                    "b", batcher.generate(b_ids, max_new_tokens=5))))
                late[0].start()
                while batcher.requests < 2:
                    time.sleep(0.001)
        batch.step = step_then_b_arrives
        return batch

    monkeypatch.setattr(gen, "new_batch", batch_that_lets_b_arrive)
    out["a"] = batcher.generate(a_ids, max_new_tokens=12)
    late[0].join(timeout=60)
    assert out["a"].token_ids == alone_a.token_ids
    assert out["b"].token_ids == alone_b.token_ids
    assert (batcher.batches, batcher.joined) == (1, 1)
    assert batcher.steps == 11  # B's steps ran inside A's: one batch, no second one


def test_the_decode_cache_appends_in_place_and_holds_what_concatenation_would(tiny_model):
    import torch

    from editkit.compat import decode_cache, drop_cache_front, join_caches

    cache = decode_cache(tiny_model.model)
    pieces = [torch.randn(3, 2, n, 4) for n in (5, 1, 1, 1, 1, 1, 1)]
    for p in pieces:
        k, v = cache.update(p, -p, 0)
    whole = torch.cat(pieces, dim=-2)
    assert torch.equal(k, whole) and torch.equal(v, -whole)
    layer = cache.layers[0]
    assert layer._k.shape[-2] > whole.shape[-2]  # spare room: no copy per token
    cache.batch_select_indices(torch.tensor([0, 2]))
    assert torch.equal(cache.layers[0].keys, whole[[0, 2]])
    other = decode_cache(tiny_model.model)
    other.update(torch.ones(1, 2, 3, 4), torch.ones(1, 2, 3, 4), 0)
    join_caches(cache, other)  # left-padded to the longer (11 columns) and stacked
    keys = cache.layers[0].keys
    assert keys.shape == (3, 2, 11, 4) and torch.equal(keys[2, :, :8], torch.zeros(2, 8, 4))
    drop_cache_front(cache, 2)
    k, _ = cache.update(torch.full((3, 2, 1, 4), 7.0), torch.zeros(3, 2, 1, 4), 0)
    assert k.shape == (3, 2, 10, 4) and torch.equal(k[:2, :, :9], whole[[0, 2], :, 2:])
    assert cache.get_seq_length() == 10


def test_a_batched_stream_yields_the_generation_in_pieces_and_closing_it_frees_its_row(
        tiny_model):
    import threading

    from editkit.runtime.batching import MicroBatcher
    from editkit.runtime.generation import TextGenerator

    gen = TextGenerator(tiny_model.model, tiny_model.tokenizer)
    batcher = MicroBatcher(gen, window_s=0.0)
    a_ids, b_ids = [1, 502, 1203], [1, 9000, 12, 13]
    alone_a = gen.generate(a_ids, max_new_tokens=20)
    alone_b = gen.generate(b_ids, max_new_tokens=8)
    with batcher.stream(a_ids, max_new_tokens=20) as s:
        pieces = list(s)
    assert "".join(pieces) == alone_a.text and s.token_ids == alone_a.token_ids
    assert s.finish_reason == alone_a.finish_reason and len(pieces) > 1

    # a stream and a plain request decode in one batch; the stream is left after 2 pieces
    out: dict = {}
    s = batcher.stream(a_ids, max_new_tokens=20)
    it = iter(s)
    first = [next(it), next(it)]
    t = threading.Thread(target=lambda: out.__setitem__(
        "b", batcher.generate(b_ids, max_new_tokens=8)))
    t.start()
    t.join(timeout=60)
    assert out["b"].token_ids == alone_b.token_ids
    s.close()
    assert s._run.left.is_set() and "".join(first) == alone_a.text[:len("".join(first))]
    assert batcher._batch is None or len(batcher._batch) == 0


def _fed_widths(model, monkeypatch) -> list[int]:
    """Record how many positions every forward of `model` is fed (the prefill's cost)."""
    widths: list[int] = []
    forward = model.forward

    def counting(*args, **kwargs):
        widths.append(kwargs["inputs_embeds"].shape[1])
        return forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", counting)
    return widths


def test_rows_that_start_alike_are_prefilled_from_one_shared_head(tiny_model, monkeypatch):
    from editkit.runtime.generation import TextGenerator

    gen = TextGenerator(tiny_model.model, tiny_model.tokenizer)
    head = list(range(100, 110))
    first = [head + [5, 6], head + [7, 8, 9, 10], head + [11]]
    later = [head + [12, 13], head[:6] + [14, 15, 16], [1, 2, 3]]
    alone = [gen.generate(p, max_new_tokens=6) for p in first + later]
    widths = _fed_widths(tiny_model.model, monkeypatch)
    rows = [gen.batch_row(p, max_new_tokens=6) for p in first + later]
    batch = gen.new_batch(None)
    batch.add(rows[:3])
    assert batch.head is not None and batch.head.ids == tuple(head)
    assert widths == [10, 4]  # the head once, then only what follows it (4 ids at most)
    batch.step()
    batch.add(rows[3:4])  # joins a running batch from the same head
    batch.add(rows[4:5])  # from the head's first 6 ids
    batch.add(rows[5:])  # another start: prefilled whole
    assert widths[-3:] == [2, 3, 3]
    while len(batch):
        batch.step()
    assert [r.result.token_ids for r in rows] == [a.token_ids for a in alone]


def test_no_head_is_computed_when_it_would_save_less_than_its_own_forward(tiny_model):
    from editkit.runtime.generation import TextGenerator

    gen = TextGenerator(tiny_model.model, tiny_model.tokenizer)
    batch = gen.new_batch(None)
    batch.add([gen.batch_row([100, 101, 102, 5], max_new_tokens=2),
               gen.batch_row([100, 101, 102, 6], max_new_tokens=2)])  # 1 row x 3 ids saved
    assert batch.head is None
    alone = gen.new_batch(None)
    alone.add([gen.batch_row(list(range(100, 140)), max_new_tokens=2)])  # a lone row
    assert alone.head is None


def test_ptoken_prompts_share_their_begin_tokens_on_the_real_model(default_model):
    """The shipped m10 layout: 10 begin tokens open every P-Token prompt."""
    from editkit import EditableLM, EditMemory
    from editkit.building import shipped_ptokens_dir
    from editkit.ptokens import PTokens

    m10 = PTokens.from_pretrained(shipped_ptokens_dir(default_model.name, 10),
                                  default_model.model, default_model.tokenizer,
                                  name=default_model.name)
    lm = EditableLM(default_model, m10, EditMemory(None), mode="ptokens")
    lm.edit(["The mother tongue of Danielle Darrieux is English.",
             "The Eiffel Tower is located in Rome.", "Toyota is owned by BMW."])
    qs = ["The mother tongue of Danielle Darrieux is", "The Eiffel Tower is located in the city of",
          "Toyota is owned by", "Danielle Darrieux grew up speaking"]
    prompts = [lm.prompt(q, mode="ptokens")[0] for q in qs]
    gen = lm.generator
    alone = [gen.generate(p.ids, ptokens=lm.ptokens, max_new_tokens=8) for p in prompts]
    rows = [gen.batch_row(p.ids, ptokens=lm.ptokens, max_new_tokens=8) for p in prompts]
    batch = gen.new_batch(lm.ptokens)
    batch.add(rows[:3])
    assert batch.head is not None and len(batch.head.ids) >= 10
    batch.step()
    batch.add(rows[3:])
    while len(batch):
        batch.step()
    for r, a in zip(rows, alone, strict=True):
        assert (r.result.token_ids, r.result.text) == (a.token_ids, a.text)


def test_a_later_batch_reuses_the_head_until_the_ptoken_rows_change(tiny_model, monkeypatch):
    import torch

    from editkit.ptokens import PTokens
    from editkit.runtime.generation import TextGenerator

    pt = PTokens.create(tiny_model.model, tiny_model.tokenizer, name=tiny_model.name, m=8)
    gen = TextGenerator(tiny_model.model, tiny_model.tokenizer)
    head = pt.begin_ids + [100, 101]
    first = [head + [5, 6], head + [7, 8, 9], head + [11]]
    late = head + [12, 13]
    alone = gen.generate(late, ptokens=pt, max_new_tokens=5)
    widths = _fed_widths(tiny_model.model, monkeypatch)
    batch = gen.new_batch(pt)
    batch.add([gen.batch_row(p, ptokens=pt, max_new_tokens=3) for p in first])
    while len(batch):
        batch.step()
    assert widths[:2] == [10, 3]
    again = gen.new_batch(pt)  # the running batch ended; the next one starts from its head
    assert again.head is batch.head
    row = gen.batch_row(late, ptokens=pt, max_new_tokens=5)
    del widths[:]
    again.add([row])
    assert widths == [2]  # no forward for the head, only the row's own ids
    while len(again):
        again.step()
    assert row.result.token_ids == alone.token_ids
    with torch.no_grad():
        pt.layer.weight.mul_(1.0)  # rows changed in place (as training does): the head is stale
    assert gen.new_batch(pt).head is None
    other = PTokens.create(tiny_model.model, tiny_model.tokenizer, name=tiny_model.name, m=8)
    assert gen.new_batch(other).head is None


def test_a_row_starts_from_its_stored_edit_prefix_only_within_its_salt(tiny_model, monkeypatch):
    """After a prefill, each row's prefix (`prefix_len` ids: everything before its question) is
    kept; the next row with that prefix and salt is fed only its question, and decodes what it
    decodes alone. Another salt (tenant) starts from the edit-independent head at most."""
    from editkit.runtime.generation import TextGenerator

    gen = TextGenerator(tiny_model.model, tiny_model.tokenizer)
    head = list(range(100, 110))
    edit_a, edit_b = head + list(range(200, 220)), head + list(range(300, 315))
    first = [(edit_a + [5, 6, 7], len(edit_a), "alice"), (edit_b + [8, 9], len(edit_b), "alice"),
             (head + [11, 12], 0, "bob")]  # (ids, prefix_len, salt)
    widths = _fed_widths(tiny_model.model, monkeypatch)
    batch = gen.new_batch(None)
    batch.add([gen.batch_row(ids, max_new_tokens=3, prefix_len=n, cache_salt=salt)
               for ids, n, salt in first])
    while len(batch):
        batch.step()
    assert len(gen.prefixes) == 2 and widths[0] == 10  # the head, then the rows
    later = [(edit_a + [40, 41], "alice"), (edit_a + [40, 41], "bob"), (edit_b + [42], "alice")]
    alone = [gen.generate(ids, max_new_tokens=6) for ids, _ in later]
    del widths[:]
    rows = [gen.batch_row(ids, max_new_tokens=6, prefix_len=len(edit_a if i < 2 else edit_b),
                          cache_salt=salt) for i, (ids, salt) in enumerate(later)]
    hits = gen.prefixes.hits
    batch = gen.new_batch(None)
    batch.add(rows)
    # alice's rows are fed their question (2 ids, 1 id); bob, who never stored edit_a, is fed
    # everything after the head (22 ids), in a forward of its own (cheaper than padding)
    assert gen.prefixes.hits - hits == 2
    assert sorted(widths) == [2, 22]
    while len(batch):
        batch.step()
    assert [r.result.token_ids for r in rows] == [a.token_ids for a in alone]


def test_the_prefix_store_keeps_the_most_recent_prefixes_within_its_bytes(tiny_model):
    from editkit.errors import InvalidInputError
    from editkit.runtime.generation import PrefixStore, TextGenerator

    def run(gen, ids):
        batch = gen.new_batch(None)
        batch.add([gen.batch_row(ids, max_new_tokens=1, prefix_len=len(ids) - 1,
                                 cache_salt="t")])

    one = TextGenerator(tiny_model.model, tiny_model.tokenizer)
    run(one, list(range(100, 130)))
    size = one.prefixes.bytes
    assert len(one.prefixes) == 1 and size > 0
    gen = TextGenerator(tiny_model.model, tiny_model.tokenizer, prefix_bytes=2 * size)
    prompts = [[7 + i] + list(range(100, 129)) for i in range(3)]
    for p in prompts:
        run(gen, p)
    assert len(gen.prefixes) == 2 and gen.prefixes.bytes == 2 * size
    assert gen.prefixes.get(None, "t", prompts[0][:-1]) is None  # the oldest went
    assert gen.prefixes.get(None, "t", prompts[2][:-1]) is not None
    gen.prefixes.clear()
    assert (len(gen.prefixes), gen.prefixes.bytes) == (0, 0)
    off = TextGenerator(tiny_model.model, tiny_model.tokenizer, prefix_bytes=0)
    run(off, prompts[0])
    assert len(off.prefixes) == 0
    with pytest.raises(InvalidInputError, match="size"):
        PrefixStore(-1)


def test_rows_of_very_different_lengths_are_prefilled_in_separate_forwards(tiny_model,
                                                                           monkeypatch):
    from editkit.runtime.generation import TextGenerator, _groups

    assert _groups([2, 4, 1], 36) == [[2, 0, 1]]  # padding 3 rows to 4 ids beats a 2nd forward
    assert _groups([5, 6, 60, 61], 36) == [[0, 1], [2, 3]]
    gen = TextGenerator(tiny_model.model, tiny_model.tokenizer)
    prompts = [[1, 5, 6], [1] + list(range(200, 260)), [1, 7, 8, 9]]
    alone = [gen.generate(p, max_new_tokens=4) for p in prompts]
    widths = _fed_widths(tiny_model.model, monkeypatch)
    rows = [gen.batch_row(p, max_new_tokens=4) for p in prompts]
    batch = gen.new_batch(None)
    batch.add(rows)
    assert widths == [4, 61]  # not 3 rows x 61
    while len(batch):
        batch.step()
    assert [r.result.token_ids for r in rows] == [a.token_ids for a in alone]


def test_an_idle_batcher_waits_for_announced_requests_and_prefills_them_together(tiny_model):
    import threading
    import time

    from editkit.runtime.batching import MicroBatcher
    from editkit.runtime.generation import TextGenerator

    gen = TextGenerator(tiny_model.model, tiny_model.tokenizer)
    batcher = MicroBatcher(gen, window_s=0.0, max_gather_s=5.0)
    out: dict = {}

    def slow_preparation() -> None:  # e.g. retrieval: the request is queued 0.3 s later
        with batcher.arriving():
            time.sleep(0.3)
            out["slow"] = batcher.generate([1, 502, 1203], max_new_tokens=4)

    started = threading.Event()

    def quick() -> None:
        started.wait()
        with batcher.arriving():
            out["quick"] = batcher.generate([1, 77], max_new_tokens=4)

    threads = [threading.Thread(target=slow_preparation), threading.Thread(target=quick)]
    for t in threads:
        t.start()
    started.set()
    for t in threads:
        t.join(timeout=60)
    assert (batcher.batches, batcher.prefills, batcher.joined) == (1, 1, 0)
    assert out["quick"].token_ids == gen.generate([1, 77], max_new_tokens=4).token_ids
    # an announcement whose request never came (an error while preparing) ends with its block
    with pytest.raises(RuntimeError), batcher.arriving():
        raise RuntimeError("retrieval failed")
    assert batcher._arriving == 0
    t = time.monotonic()
    batcher.generate([1, 77], max_new_tokens=2)  # nothing announced: no wait for anyone
    assert time.monotonic() - t < 4.0


def test_ask_many_again_reuses_each_edit_prefix_and_answers_as_alone(lm):
    """The real default model: a second `ask_many` about the same edits is fed from the stored
    edit prefixes, and every answer is still the one `ask` gives alone."""
    lm.clear()
    lm.edit(["The mother tongue of Danielle Darrieux is English.",
             "The Eiffel Tower is located in Rome.", "Toyota is owned by BMW."])
    qs = ["The mother tongue of Danielle Darrieux is", "Where is the Eiffel Tower? It is in",
          "Toyota is owned by"]
    alone = [lm.ask(q, max_new_tokens=10).text for q in qs]
    lm.ask_many(qs, max_new_tokens=10)
    hits = lm.generator.prefixes.hits
    again = lm.ask_many(["Danielle Darrieux's mother tongue is", *qs[1:]], max_new_tokens=10)
    assert lm.generator.prefixes.hits - hits == 3
    assert [a.text for a in again[1:]] == alone[1:]
    assert again[0].edit is not None and "English" in again[0].text


def test_the_prefix_store_size_is_validated_before_anything_loads(tiny_model, tiny_ptokens):
    from editkit import EditableLM, EditMemory

    for bad in (-1, "64", True):
        with pytest.raises(InvalidInputError, match="prefix_store_mb"):
            EditableLM.from_pretrained("no/such-model", prefix_store_mb=bad)
    lm = EditableLM(tiny_model, tiny_ptokens, EditMemory(None), prefix_store_mb=0.5)
    assert lm.generator.prefixes.max_bytes == 2**19
