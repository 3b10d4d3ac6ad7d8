"""Generation with stop sequences, cancellation and token streaming through a streamer thread.

`editkit.inference.generate/stream` have no stop-sequence or cancel hook, so the chat model uses
this module: the same `inputs_embeds` path (P-Token rows looked up by `inference.input_embeds`)
plus a `StoppingCriteria` that ends generation when a stop string appears, when the consumer of a
stream goes away, or at `max_new_tokens`.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from ...runtime import scoring as inference
from ...ptokens import PTokens


class TextAssembler:
    """Turns generated text into the text a caller sees: cut at the first stop sequence and
    stripped of surrounding whitespace, emitted incrementally so that streamed pieces concatenate
    to exactly what a non-streamed call returns (text that might be the start of a stop sequence,
    and trailing whitespace, are held back until they are known to stay)."""

    def __init__(self, stops: Sequence[str] = ()) -> None:
        self.stops = [s for s in stops if s]
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.buf = ""
        self.sent = 0
        self.started = False
        self.stopped = False
        self.text = ""  # everything emitted so far

    def feed(self, piece: str) -> str:
        """Add generated text; return the new text that is safe to emit."""
        if self.stopped:
            return ""
        self.buf += piece
        hits = [i for i in (self.buf.find(s, max(0, self.sent - len(s))) for s in self.stops)
                if i >= 0]
        if hits:
            self.buf = self.buf[:min(hits)]
            self.stopped = True
        return self._emit(final=self.stopped)

    def finish(self) -> str:
        """The rest of the text once generation has ended."""
        return self._emit(final=True)

    def _emit(self, final: bool) -> str:
        text = self.buf
        safe = text if final else text[: max(0, len(text) - self.hold)]
        end = len(safe.rstrip())
        start = self.sent if self.started else len(text) - len(text.lstrip())
        if end <= start:
            return ""
        self.started, self.sent = True, end
        self.text += text[start:end]
        return text[start:end]


class _Criteria(StoppingCriteria):
    """Stop on a stop string in the decoded output, or on cancel; counts generated tokens."""

    def __init__(self, tokenizer: Any, stops: Sequence[str], cancel: threading.Event) -> None:
        super().__init__()
        self.tokenizer, self.stops, self.cancel = tokenizer, [s for s in stops if s], cancel
        self.n_new = 0
        self.hit_stop = False

    def __call__(self, input_ids: torch.Tensor, scores: Any, **_: Any) -> torch.Tensor:
        self.n_new += 1
        done = self.cancel.is_set()
        if self.stops and not done:
            text = self.tokenizer.decode(input_ids[0, -self.n_new:], skip_special_tokens=True)
            done = self.hit_stop = any(s in text for s in self.stops)
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool,
                          device=input_ids.device)


@dataclass
class Generation:
    """What one generation produced."""

    text: str = ""
    completion_tokens: int = 0
    finish_reason: str = "stop"
    pieces: list[str] = field(default_factory=list)


def _kwargs(model: Any, tokenizer: Any, ptokens: PTokens | None, prompt_ids: Sequence[int],
            max_new_tokens: int, temperature: float | None, criteria: _Criteria) -> dict[str, Any]:
    dev = model.get_input_embeddings().weight.device
    ids = torch.tensor([list(prompt_ids)], device=dev)
    kw: dict[str, Any] = {"inputs_embeds": inference.input_embeds(model, ptokens, ids),
                          "attention_mask": torch.ones_like(ids),
                          "max_new_tokens": max_new_tokens,
                          "pad_token_id": tokenizer.pad_token_id,
                          "stopping_criteria": StoppingCriteriaList([criteria])}
    if temperature:  # None or 0: greedy, as in the SDK
        kw.update(do_sample=True, temperature=float(temperature))
    else:
        kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    return kw


def _finish_reason(gen: Generation, criteria: _Criteria, assembler: TextAssembler,
                   max_new_tokens: int, eos_ids: set[int], last: int | None) -> str:
    if assembler.stopped or criteria.hit_stop or (last is not None and last in eos_ids):
        return "stop"
    return "length" if gen.completion_tokens >= max_new_tokens else "stop"


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    eos = eos if eos is not None else tokenizer.eos_token_id
    return set(eos) if isinstance(eos, (list, tuple)) else ({eos} if eos is not None else set())


def generate(model: Any, tokenizer: Any, ptokens: PTokens | None, prompt_ids: Sequence[int], *,
             max_new_tokens: int, temperature: float | None = None,
             stop: Sequence[str] = ()) -> Generation:
    """Generate in one go; the text is cut at the first stop sequence and stripped.

    It runs the streaming path to the end: one code path for invoke and stream (so their texts
    are identical by construction), and generation off the calling thread, which on a busy 2-core
    machine was measured 5-7x faster than `model.generate` in the main thread (torch 2.13 CPU,
    8 new tokens: ~6 s vs ~0.9 s).
    """
    result = Generation()
    for _ in stream(model, tokenizer, ptokens, prompt_ids, max_new_tokens=max_new_tokens,
                    temperature=temperature, stop=stop, result=result):
        pass
    return result


def stream(model: Any, tokenizer: Any, ptokens: PTokens | None, prompt_ids: Sequence[int], *,
           max_new_tokens: int, temperature: float | None = None, stop: Sequence[str] = (),
           result: Generation | None = None) -> Iterator[str]:
    """Yield text pieces as a worker thread generates them (`TextIteratorStreamer`).

    `result` (if given) is filled in as the stream runs: text, completion_tokens and
    finish_reason are final once the iterator is exhausted. Closing the iterator early cancels
    the generation at its next step, so an abandoned stream does not keep the model busy.
    """
    from transformers import TextIteratorStreamer

    result = result if result is not None else Generation()
    cancel = threading.Event()
    criteria = _Criteria(tokenizer, stop, cancel)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    kwargs = _kwargs(model, tokenizer, ptokens, prompt_ids, max_new_tokens, temperature, criteria)
    failure: list[BaseException] = []
    last: list[int] = []

    class _Tap(BaseStreamer):  # records the last generated token id (to tell EOS from a length stop)
        def put(self, value: torch.Tensor) -> None:
            if value.numel():
                last[:] = [int(value.reshape(-1)[-1])]
            streamer.put(value)

        def end(self) -> None:
            streamer.end()

    def work() -> None:
        try:
            with torch.no_grad():
                model.generate(**kwargs, streamer=_Tap())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer's thread
            failure.append(exc)
            streamer.end()

    assembler = TextAssembler(stop)
    thread = threading.Thread(target=work, name="editkit-langchain-generate", daemon=True)
    thread.start()
    try:
        for piece in streamer:
            out = assembler.feed(piece)
            if out:
                result.pieces.append(out)
                yield out
            if assembler.stopped:
                cancel.set()
                break
        tail = assembler.finish()
        if tail:
            result.pieces.append(tail)
            yield tail
    finally:
        cancel.set()  # an abandoned stream stops the worker at its next step
        thread.join()
    if failure:
        raise failure[0]
    result.text = assembler.text
    result.completion_tokens = criteria.n_new
    result.finish_reason = _finish_reason(result, criteria, assembler, max_new_tokens,
                                          _eos_ids(model, tokenizer), last[0] if last else None)
