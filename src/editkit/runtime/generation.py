"""The one generate / stream: stop sequences, cancellation, a finish reason, greedy or sampled.

`EditableLM.ask` / `stream`, the LangChain chat model, evaluation and the benchmarks all generate
through `TextGenerator`. How tokens are computed is a `Decoder`, chosen once per model by
`decoder_for`, not by the callers:

- `HFDecoder`: `model.generate` over `inputs_embeds` (P-Token rows looked up by
  `scoring.input_embeds`), greedy or sampled; always available, and the fallback of the others;
- `PrefixCacheDecoder`: greedy, with the KV cache of the prompt's prefix (demonstrations + fact)
  reused across questions (`EditableLM(prefix_cache=N)`);
- `MixedPrecisionDecoder`: greedy, fp32 prefill then a bf16/fp16 copy of the weights
  (`EditableLM(decode_dtype="bfloat16")`).

The two greedy variants cannot sample: a sampled request (`temperature > 0`) falls back to
`HFDecoder` on the full-precision model, without the prefix cache. A prompt without a cacheable
prefix falls through the prefix-cache variant the same way.

Every decoder runs in a worker thread and hands each new token to one `emit` callback, which
detokenizes incrementally, cuts the text at the first stop sequence, strips surrounding
whitespace and queues the text for the consumer. `emit` answers whether to go on, so stop
sequences, EOS, `max_new_tokens` and cancellation end every variant at its next step. Streamed
pieces concatenate to exactly what `generate` returns: `generate` is the stream run to its end.
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from ..compat import eos_ids as model_eos_ids
from ..compat import forward_last_logits, model_device, new_cache
from ..errors import InvalidInputError
from ..ptokens import PTokens
from .mixed_decode import greedy_mixed
from .prefix_cache import Emit, PrefixCache
from .scoring import input_embeds

__all__ = ["Decoder", "DecodeRequest", "Emit", "FinishReason", "Generation", "GenerationStream",
           "HFDecoder", "MixedPrecisionDecoder", "PrefixCacheDecoder", "TextAssembler",
           "TextGenerator", "check_generation_args", "decoder_for", "greedy_batch"]

FinishReason = Literal["stop", "length"]
MAX_NEW_TOKENS = 4096


def check_generation_args(max_new_tokens: Any, temperature: Any = None, *,
                          name: str = "max_new_tokens") -> None:
    """InvalidInputError unless `max_new_tokens` is an int in [1, 4096] and `temperature` is
    None or a number ≥ 0 (None or 0: greedy)."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) \
            or not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
        raise InvalidInputError(f"{name} must be an int between 1 and {MAX_NEW_TOKENS}.")
    if temperature is not None and (isinstance(temperature, bool)
                                    or not isinstance(temperature, (int, float))
                                    or not temperature >= 0):
        raise InvalidInputError("temperature must be None or a number ≥ 0.")


def _check_stop(stop: Any) -> list[str]:
    if stop is None:
        return []
    if isinstance(stop, str) or not isinstance(stop, Sequence) \
            or not all(isinstance(s, str) for s in stop):
        raise InvalidInputError("stop must be a list of strings.")
    return [s for s in stop if s]


@dataclass(frozen=True)
class DecodeRequest:
    """What to continue and how: prompt ids, the P-Tokens they may hold, the budget, sampling."""

    ids: tuple[int, ...]
    ptokens: PTokens | None
    max_new_tokens: int
    temperature: float | None = None  # None or 0: greedy
    prefix_len: int = 0  # leading tokens a prefix cache may reuse (0: none)

    @property
    def greedy(self) -> bool:
        return not self.temperature


class Decoder(Protocol):
    """Computes new tokens for a request and hands each to `emit` until it returns False or
    `max_new_tokens` are out (runs in the generation's worker thread)."""

    def decode(self, request: DecodeRequest, emit: Emit) -> None: ...


class _EmitCriteria(StoppingCriteria):
    """Hands every token `model.generate` produces to `emit`; stops when it says so."""

    def __init__(self, emit: Emit) -> None:
        super().__init__()
        self.emit = emit

    def __call__(self, input_ids: torch.Tensor, scores: Any, **_: Any) -> torch.Tensor:
        stop = not self.emit(int(input_ids[0, -1]))
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


class HFDecoder:
    """`model.generate` over `inputs_embeds`: greedy, or sampled with the model's generation
    config (top-k/top-p) at the given temperature."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model, self.tokenizer = model, tokenizer

    def decode(self, request: DecodeRequest, emit: Emit) -> None:
        ids = torch.tensor([list(request.ids)], device=model_device(self.model))
        kw: dict[str, Any] = {"inputs_embeds": input_embeds(self.model, request.ptokens, ids),
                              "attention_mask": torch.ones_like(ids),
                              "max_new_tokens": request.max_new_tokens,
                              "pad_token_id": self.tokenizer.pad_token_id,
                              "stopping_criteria": StoppingCriteriaList([_EmitCriteria(emit)])}
        if request.greedy:  # drop sampling knobs a model's generation_config may carry
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kw.update(do_sample=True, temperature=float(request.temperature or 0))
        with torch.no_grad():
            self.model.generate(**kw)


class PrefixCacheDecoder:
    """Greedy decoding with the prompt prefix's KV cache reused (`runtime.prefix_cache`).
    Sampled requests and prompts without a cacheable prefix go to `fallback`."""

    def __init__(self, cache: PrefixCache, fallback: Decoder) -> None:
        self.cache, self.fallback = cache, fallback

    def decode(self, request: DecodeRequest, emit: Emit) -> None:
        if not request.greedy or not request.prefix_len:
            return self.fallback.decode(request, emit)
        self.cache.greedy(request.ids, request.prefix_len, request.ptokens,
                          max_new_tokens=request.max_new_tokens, emit=emit)


class MixedPrecisionDecoder:
    """Greedy decoding with a cheaper-dtype copy of the weights after a full-precision prefill
    (`runtime.mixed_decode`). Sampled requests go to `fallback` (full precision)."""

    def __init__(self, model: Any, decode_model: Any, fallback: Decoder) -> None:
        self.model, self.decode_model, self.fallback = model, decode_model, fallback

    def decode(self, request: DecodeRequest, emit: Emit) -> None:
        if not request.greedy:
            return self.fallback.decode(request, emit)
        greedy_mixed(self.model, self.decode_model, request.ptokens, request.ids,
                     max_new_tokens=request.max_new_tokens, emit=emit)


def decoder_for(model: Any, tokenizer: Any, *, prefix_cache: PrefixCache | None = None,
                decode_model: Any = None) -> Decoder:
    """The decoder for a model's settings: the prefix cache first (when on and the prompt has a
    cacheable prefix), else bf16/fp16 decoding (when on), else `model.generate`."""
    decoder: Decoder = HFDecoder(model, tokenizer)
    if decode_model is not None:
        decoder = MixedPrecisionDecoder(model, decode_model, decoder)
    if prefix_cache is not None:
        decoder = PrefixCacheDecoder(prefix_cache, decoder)
    return decoder


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


class _Detokenizer:
    """Incremental decoding that adds up to `tokenizer.decode(all ids)`: the ids since the last
    newline are decoded together (so multi-token characters and word joins come out right), and
    a trailing incomplete character (U+FFFD) waits for the token that completes it."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.window: list[int] = []
        self.sent = 0  # characters of the window's text already returned

    def push(self, token: int) -> str:
        self.window.append(token)
        text = self.tokenizer.decode(self.window, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return ""
        new = text[self.sent:]
        if text.endswith("\n"):
            self.window, self.sent = [], 0
        else:
            self.sent = len(text)
        return new

    def flush(self) -> str:
        if not self.window:
            return ""
        text = self.tokenizer.decode(self.window, skip_special_tokens=True)
        new = text[self.sent:]
        self.window, self.sent = [], 0
        return new


@dataclass
class Generation:
    """What one generation produced (final once its stream is exhausted)."""

    text: str = ""
    completion_tokens: int = 0  # generated tokens, EOS and the token that completed a stop incl.
    finish_reason: FinishReason | None = None  # None while running or when cancelled
    token_ids: list[int] = field(default_factory=list)


_END = object()


class _Run:
    """The worker side of one generation: what `emit` needs, shared with the consumer through
    a queue (never a reference to the stream object, so an abandoned stream can be collected)."""

    def __init__(self, tokenizer: Any, request: DecodeRequest, stop: Sequence[str],
                 eos: Sequence[int]) -> None:
        self.request = request
        self.eos = frozenset(eos)
        self.detok = _Detokenizer(tokenizer)
        self.assembler = TextAssembler(stop)
        self.result = Generation()
        self.out: queue.Queue[Any] = queue.Queue()
        self.cancel = threading.Event()
        self.failure: BaseException | None = None
        self.hit_eos = False

    def emit(self, token: int) -> bool:
        if self.cancel.is_set():
            return False
        self.result.token_ids.append(token)
        piece = self.assembler.feed(self.detok.push(token))
        if piece:
            self.out.put(piece)
        self.hit_eos = token in self.eos
        return not (self.assembler.stopped or self.hit_eos or self.cancel.is_set()
                    or len(self.result.token_ids) >= self.request.max_new_tokens)

    def work(self, decoder: Decoder) -> None:
        try:
            decoder.decode(self.request, self.emit)
            self.finish()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer's thread
            self.failure = exc
        finally:
            self.out.put(_END)

    def finish(self) -> None:
        """After the last token: the text's tail, the counts and the finish reason."""
        if self.cancel.is_set():
            return
        tail = self.assembler.feed(self.detok.flush()) + self.assembler.finish()
        if tail:
            self.out.put(tail)
        r = self.result
        r.text, r.completion_tokens = self.assembler.text, len(r.token_ids)
        r.finish_reason = ("stop" if self.assembler.stopped or self.hit_eos else
                           "length" if r.completion_tokens >= self.request.max_new_tokens
                           else "stop")


class GenerationStream:
    """Text pieces of one generation as a worker thread produces them.

    Iterate it (or call `next`) for the pieces; `text`, `completion_tokens`, `finish_reason` and
    `token_ids` are final once it is exhausted. The worker starts on the first `next`.
    `close()`, leaving a `for` loop over it early, or dropping it cancels the generation at its
    next step; `close()` also waits for the worker to finish, so nothing computes afterwards.
    """

    def __init__(self, decoder: Decoder, tokenizer: Any, request: DecodeRequest,
                 stop: Sequence[str] = (), eos: Sequence[int] = ()) -> None:
        self._decoder = decoder
        self._run = _Run(tokenizer, request, stop, eos)
        self._thread: threading.Thread | None = None
        self._done = False

    # ---- results --------------------------------------------------------------------------
    @property
    def result(self) -> Generation:
        return self._run.result

    @property
    def text(self) -> str:
        """The text so far (cut at a stop sequence, stripped); the whole answer once exhausted."""
        return self._run.assembler.text

    @property
    def completion_tokens(self) -> int:
        return len(self._run.result.token_ids)

    @property
    def finish_reason(self) -> FinishReason | None:
        return self._run.result.finish_reason

    @property
    def token_ids(self) -> list[int]:
        return list(self._run.result.token_ids)

    # ---- iteration ------------------------------------------------------------------------
    def __next__(self) -> str:
        if self._done:
            raise StopIteration
        if self._thread is None:
            self._thread = threading.Thread(target=self._run.work, args=(self._decoder,),
                                            name="editkit-generate", daemon=True)
            self._thread.start()
        item = self._run.out.get()
        if item is _END:
            self._done = True
            self._thread.join()
            if self._run.failure is not None:
                raise self._run.failure
            raise StopIteration
        return item

    def __iter__(self) -> Iterator[str]:
        # A generator, not `self`: when a `for` loop over the stream is left early, this
        # generator is closed and the generation cancelled with it.
        try:
            while True:
                try:
                    piece = next(self)
                except StopIteration:
                    return
                yield piece
        finally:
            if not self._done:
                self.close()

    def close(self) -> None:
        """Cancel the generation (if still running) and wait for its worker to stop."""
        self._run.cancel.set()
        if self._thread is not None:
            self._thread.join()
        self._done = True

    def __enter__(self) -> GenerationStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # dropped unfinished: stop the worker at its next step
        run = getattr(self, "_run", None)
        if run is not None and not getattr(self, "_done", True):
            run.cancel.set()


class TextGenerator:
    """The one generate / stream for one model and tokenizer, over a `Decoder` (`decoder_for`)."""

    def __init__(self, model: Any, tokenizer: Any, decoder: Decoder | None = None) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.decoder = decoder if decoder is not None else HFDecoder(model, tokenizer)

    def stream(self, ids: Sequence[int], *, ptokens: PTokens | None = None,
               max_new_tokens: int = 32, temperature: float | None = None,
               stop: Sequence[str] | None = (), prefix_len: int = 0) -> GenerationStream:
        """A cancellable stream of text pieces after `ids` (greedy unless `temperature > 0`);
        the text ends before the first of the `stop` strings."""
        check_generation_args(max_new_tokens, temperature)
        if not ids:
            raise InvalidInputError("generation needs at least one prompt token.")
        request = DecodeRequest(ids=tuple(int(i) for i in ids), ptokens=ptokens,
                                max_new_tokens=max_new_tokens,
                                temperature=float(temperature) if temperature else None,
                                prefix_len=int(prefix_len))
        return GenerationStream(self.decoder, self.tokenizer, request, _check_stop(stop),
                                model_eos_ids(self.model, self.tokenizer))

    def generate(self, ids: Sequence[int], **kwargs: Any) -> Generation:
        """`stream(...)` run to its end: the whole text, token counts and finish reason."""
        s = self.stream(ids, **kwargs)
        for _ in s:
            pass
        return s.result

    def generate_many(self, prompts: Sequence[Sequence[int]], *,
                      ptokens: PTokens | None = None, max_new_tokens: int = 32,
                      stop: Sequence[str] | None = (), batch_size: int = 16) -> list[Generation]:
        """Greedy answers to several prompts decoded together (`greedy_batch`), in batches of
        at most `batch_size`: what `generate` returns for each prompt alone (same text, counts
        and finish reason; argmax ties aside, float rounding differs with the batch shape)."""
        check_generation_args(max_new_tokens)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInputError("batch_size must be an int ≥ 1.")
        if any(not p for p in prompts):
            raise InvalidInputError("generation needs at least one prompt token.")
        stops = _check_stop(stop)
        eos = model_eos_ids(self.model, self.tokenizer)
        runs = [_Run(self.tokenizer, DecodeRequest(ids=tuple(int(i) for i in p), ptokens=ptokens,
                                                   max_new_tokens=max_new_tokens), stops, eos)
                for p in prompts]
        pad = self.tokenizer.pad_token_id
        pad = int(pad if pad is not None else (eos[0] if eos else 0))
        for start in range(0, len(runs), batch_size):
            chunk = runs[start: start + batch_size]
            greedy_batch(self.model, ptokens, [r.request.ids for r in chunk],
                         [r.emit for r in chunk], max_new_tokens=max_new_tokens, pad_id=pad)
            for r in chunk:
                r.finish()
        return [r.result for r in runs]


@torch.no_grad()
def greedy_batch(model: Any, ptokens: PTokens | None, prompts: Sequence[Sequence[int]],
                 emits: Sequence[Emit], *, max_new_tokens: int, pad_id: int) -> None:
    """Greedy decoding of several prompts in one batch: each new token of row i goes to
    `emits[i]`; a row leaves the batch (its KV cache rows dropped) when its `emit` returns False.

    Prompts are left-padded, so every row's next token sits in the last column. The 2D
    attention mask hides the padding, and positions count from each row's first real token,
    so a row computes what it computes alone (up to float rounding). On a CPU decoding one
    sequence is memory-bound: reading the weights once for the whole batch is the saving.
    """
    dev = model_device(model)
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad_id] * (width - len(p)) + list(p) for p in prompts], device=dev)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=dev)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = new_cache(model)
    rows = list(range(len(prompts)))  # batch row -> prompt index
    embeds = input_embeds(model, ptokens, ids)
    for _ in range(max_new_tokens):
        nxt = forward_last_logits(model, embeds, mask, pos, cache).argmax(-1)
        keep = [b for b, i in enumerate(rows) if emits[i](int(nxt[b]))]
        if not keep:
            return
        if len(keep) < len(rows):
            idx = torch.tensor(keep, device=dev)
            cache.batch_select_indices(idx)
            rows, nxt, mask, pos = [rows[b] for b in keep], nxt[idx], mask[idx], pos[idx]
        mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=1)
        pos = pos[:, -1:] + 1
        embeds = input_embeds(model, ptokens, nxt[:, None])
