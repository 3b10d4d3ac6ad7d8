"""The one generate / stream (editkit.runtime.generation) on the tiny random model: stop
sequences, finish reasons, EOS, sampling, decoder fallbacks, and cancellation that really stops
the computation."""
from __future__ import annotations

import functools
import gc
import threading
import time

import pytest
import torch

from editkit import Answer, AnswerStream, EditableLM, EditMemory, InvalidInputError
from editkit.loading import load_model
from editkit.runtime.generation import TextAssembler, TextGenerator

Q = "The Eiffel Tower is located in the city of"
FACT = "The Eiffel Tower is located in Rome."


def counting(model, delay: float = 0.0):
    """Patch `model.forward` to count its calls (and optionally take `delay` seconds each)."""
    forward = model.forward
    model.calls = 0

    @functools.wraps(forward)
    def wrapped(*args, **kwargs):
        model.calls += 1
        if delay:
            time.sleep(delay)
        return forward(*args, **kwargs)

    model.forward = wrapped
    return model


def _generate_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "editkit-generate" and t.is_alive()]


def _wait_for_workers(timeout: float = 10.0) -> None:
    deadline = time.time() + timeout
    while _generate_threads() and time.time() < deadline:
        time.sleep(0.02)


@pytest.fixture
def slow_lm(tiny_model_dir, tiny_ptokens) -> EditableLM:
    """A tiny-model EditableLM whose forward passes are counted and take 30 ms each."""
    loaded = load_model(tiny_model_dir, device="cpu")
    counting(loaded.model, delay=0.03)
    return EditableLM(loaded, tiny_ptokens, EditMemory(None), mode="ptokens")


# ---- text, stops, finish reasons ------------------------------------------------------------
def test_ask_returns_an_answer_with_the_streamed_text_and_a_length_finish(tiny_lm):
    a = tiny_lm.ask(Q, fact=FACT, max_new_tokens=12)
    s = tiny_lm.stream(Q, fact=FACT, max_new_tokens=12)
    assert isinstance(a, Answer) and isinstance(s, AnswerStream)
    assert s.finish_reason is None  # nothing generated yet
    pieces = list(s)
    assert len(pieces) >= 2 and "".join(pieces) == a.text == s.text
    assert a.finish_reason == s.finish_reason == "length"  # the random model never says EOS
    assert a.completion_tokens == s.completion_tokens == 12
    sampled = tiny_lm.ask(Q, fact=FACT, max_new_tokens=3, do_sample=True, temperature=0.8)
    assert isinstance(sampled, Answer) and sampled.completion_tokens <= 3


def test_stop_sequences_cut_ask_and_stream_alike_and_end_generation(tiny_lm):
    full = tiny_lm.ask(Q, fact=FACT, max_new_tokens=12).text
    mid = len(full) // 2
    stop = full[mid:mid + 3].strip()
    assert stop, full
    cut = full[:full.index(stop)].strip()
    a = tiny_lm.ask(Q, fact=FACT, max_new_tokens=12, stop=[stop, "never appears"])
    assert a.text == cut and a.finish_reason == "stop" and a.completion_tokens < 12
    s = tiny_lm.stream(Q, fact=FACT, max_new_tokens=12, stop=[stop])
    assert "".join(s) == cut and s.finish_reason == "stop"
    assert s.completion_tokens == a.completion_tokens


def test_eos_ends_the_answer_with_finish_reason_stop(tiny_model_dir, tiny_ptokens):
    loaded = load_model(tiny_model_dir, device="cpu")
    lm = EditableLM(loaded, tiny_ptokens, EditMemory(None), mode="none")

    def sample() -> Answer:  # the greedy random model repeats one token; sampling varies
        torch.manual_seed(0)
        return lm.ask(Q, max_new_tokens=8, do_sample=True, temperature=5.0)

    p, _, _ = lm.prompt(Q)
    torch.manual_seed(0)
    tokens = lm.generator.generate(p.ids, max_new_tokens=8, temperature=5.0).token_ids
    k = next(i for i in range(1, len(tokens)) if tokens[i] not in tokens[:i])
    assert sample().finish_reason == "length"
    loaded.model.generation_config.eos_token_id = tokens[k]  # the model "says EOS" at step k
    a = sample()
    assert a.finish_reason == "stop" and a.completion_tokens == k + 1


def test_generation_with_ptokens_returns_only_vocabulary_ids(tiny_model, tiny_ptokens):
    tok, pt = tiny_model.tokenizer, tiny_ptokens
    prefix = pt.begin_ids + tok("Toko Yasuda plays the piano.").input_ids + pt.end_ids
    gen = TextGenerator(tiny_model.model, tok).generate(prefix, ptokens=pt, max_new_tokens=12)
    assert 1 <= len(gen.token_ids) <= 12 and gen.completion_tokens == len(gen.token_ids)
    assert max(gen.token_ids) < pt.layer.first_id


def test_sampling_follows_the_seed_and_greedy_is_deterministic(tiny_lm):
    def sampled(seed: int) -> str:
        torch.manual_seed(seed)
        return tiny_lm.ask(Q, max_new_tokens=6, do_sample=True, temperature=5.0).text

    assert sampled(0) == sampled(0)
    assert len({sampled(s) for s in range(4)}) > 1
    assert tiny_lm.ask(Q, max_new_tokens=6).text == tiny_lm.ask(Q, max_new_tokens=6).text


def test_text_assembler_holds_back_what_may_start_a_stop_sequence():
    asm = TextAssembler(["STOP"])
    out = [asm.feed(p) for p in (" Hello", " wor", "ld ST", "OP and more")]
    assert "".join(out) + asm.finish() == "Hello world" and asm.stopped
    # the last 3 characters always wait (they could start "STOP"), so " ST" never went out
    assert out == ["He", "llo", " world", ""]


@pytest.mark.parametrize("call, match", [
    (lambda lm: lm.ask(Q, stop="x"), "stop"),
    (lambda lm: lm.stream(Q, stop=[1]), "stop"),
    (lambda lm: lm.stream(Q, max_new_tokens=5000), "max_new_tokens"),
    (lambda lm: lm.stream(Q, max_new_tokens=True), "max_new_tokens"),
    (lambda lm: lm.stream(Q, do_sample=True, temperature=-1), "temperature"),
])
def test_bad_generation_arguments_get_a_typed_error(tiny_lm, call, match):
    with pytest.raises(InvalidInputError, match=match):
        call(tiny_lm)


def test_a_failure_in_the_worker_reaches_the_caller(tiny_model_dir, tiny_ptokens):
    loaded = load_model(tiny_model_dir, device="cpu")

    def broken(*args, **kwargs):
        raise RuntimeError("device lost")

    loaded.model.forward = broken
    lm = EditableLM(loaded, tiny_ptokens, EditMemory(None), mode="none")
    with pytest.raises(RuntimeError, match="device lost"):
        lm.ask(Q, max_new_tokens=3)
    assert _generate_threads() == []


# ---- cancellation -----------------------------------------------------------------------
def test_closing_a_stream_stops_the_forward_passes(slow_lm):
    s = slow_lm.stream(Q, max_new_tokens=300)
    assert next(s)
    s.close()  # returns once the worker has stopped
    calls = slow_lm.model.calls
    time.sleep(0.3)
    assert slow_lm.model.calls == calls < 40  # 300 steps would have been 300 calls
    assert s.finish_reason is None and _generate_threads() == []
    with pytest.raises(InvalidInputError, match="cancelled"):
        s.answer()


def test_leaving_a_for_loop_early_cancels_the_stream(slow_lm):
    s = slow_lm.stream(Q, max_new_tokens=300)
    for _ in s:
        break
    calls = slow_lm.model.calls
    time.sleep(0.3)
    assert slow_lm.model.calls == calls < 40 and _generate_threads() == []


def test_a_dropped_stream_stops_computing(slow_lm):
    s = slow_lm.stream(Q, max_new_tokens=300)
    next(s)
    del s
    gc.collect()
    _wait_for_workers()
    calls = slow_lm.model.calls
    time.sleep(0.3)
    assert slow_lm.model.calls == calls < 40 and _generate_threads() == []


def test_a_stream_never_iterated_computes_nothing(slow_lm):
    s = slow_lm.stream(Q, max_new_tokens=300)
    time.sleep(0.1)
    assert slow_lm.model.calls == 0
    s.close()


# ---- decoder variants -------------------------------------------------------------------
def test_sampling_falls_back_from_the_greedy_only_decoders(tiny_model_dir, tiny_ptokens):
    loaded = load_model(tiny_model_dir, device="cpu")
    lm = EditableLM(loaded, tiny_ptokens, EditMemory(None), mode="ptokens", prefix_cache=2,
                    decode_dtype="bfloat16")
    counting(lm.decode_model)
    lm.ask(Q, fact=FACT, max_new_tokens=4, do_sample=True, temperature=0.7)
    assert lm.prefix_cache.misses == lm.prefix_cache.hits == 0 and lm.decode_model.calls == 0
    lm.ask(Q, fact=FACT, max_new_tokens=4)  # greedy with a cacheable prefix: the prefix cache
    assert lm.prefix_cache.misses == 1 and lm.decode_model.calls == 0
    lm.ask(Q, mode="none", max_new_tokens=4)  # no prefix to cache: the bf16 decoder
    assert lm.decode_model.calls == 3  # the first token comes from the fp32 prefill
