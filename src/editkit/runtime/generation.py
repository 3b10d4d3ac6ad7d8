"""The one generate / stream: stop sequences, cancellation, a finish reason, greedy or sampled.

`EditableLM.ask` / `stream`, the LangChain chat model, evaluation and the benchmarks all generate
through `TextGenerator`. How tokens are computed is a `Decoder`, chosen once per model by
`decoder_for`, not by the callers:

- `BatchDecoder`: a batch of one through `DecodeBatch`, the decode loop that `generate_many`
  and the server's `MicroBatcher` run for many sequences at once (P-Token rows looked up by
  `scoring.input_embeds`), greedy or sampled (`Sampler`, seeded per request); always available,
  and the fallback of the others, so a request gets the same tokens alone or in a batch;
- `PrefixCacheDecoder`: greedy, with the KV cache of the prompt's prefix (demonstrations + fact)
  reused across questions (`EditableLM(prefix_cache=N)`);
- `MixedPrecisionDecoder`: greedy, fp32 prefill then a bf16/fp16 copy of the weights
  (`EditableLM(decode_dtype="bfloat16")`).

The two greedy variants cannot sample: a sampled request (`temperature > 0`) falls back to
`BatchDecoder` on the full-precision model, without the prefix cache. A prompt without a cacheable
prefix falls through the prefix-cache variant the same way.

Every decoder runs in a worker thread and hands each new token to one `emit` callback, which
detokenizes incrementally, cuts the text at the first stop sequence, strips surrounding
whitespace and queues the text for the consumer. `emit` answers whether to go on, so stop
sequences, EOS, `max_new_tokens` and cancellation end every variant at its next step. Streamed
pieces concatenate to exactly what `generate` returns: `generate` is the stream run to its end.

This module keeps the generations themselves (`Generation`, the worker side `_Run`, the streams
and `TextGenerator`); the parts they are built from live by concept, one module each:
`runtime.requests` (argument checks, `DecodeRequest`, `Decoder`, `Sampler`, `FinishReason`),
`runtime.prefix_store` (`PrefixStore`), `runtime.decode_batch` (`DecodeBatch`),
`runtime.decoders` (the decoders, `decoder_for`) and `runtime.text` (`TextAssembler`). Their
public names are re-exported here, so `from editkit.runtime.generation import ...` keeps working.
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..compat import eos_ids as model_eos_ids
from ..errors import InvalidInputError
from ..ptokens import PTokens
from .decode_batch import (
    DecodeBatch,
    _groups,  # noqa: F401 - re-exported (tests import it from here)
    pad_id,
)
from .decoders import BatchDecoder, MixedPrecisionDecoder, PrefixCacheDecoder, decoder_for
from .prefix_cache import Emit
from .prefix_store import DEFAULT_PREFIX_BYTES, Prefix, PrefixStore
from .requests import (
    Decoder,
    DecodeRequest,
    FinishReason,
    Sampler,
    check_generation_args,
    check_stop,
)
from .text import TextAssembler, _Detokenizer

# Names imported only to be re-exported are listed here (`_groups`: marked noqa above).
__all__ = ["DEFAULT_PREFIX_BYTES", "BatchDecoder", "DecodeBatch", "DecodeRequest", "Decoder",
           "Emit", "FinishReason", "Generation", "GenerationStream", "MixedPrecisionDecoder",
           "PrefixCacheDecoder", "Prefix", "PrefixStore", "RunResults", "Sampler",
           "TextAssembler", "TextGenerator", "check_generation_args", "decoder_for"]


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
        self.sampler: Sampler | None = None  # set by whoever decodes it in a `DecodeBatch`
        self.left = threading.Event()  # set once it left a `DecodeBatch` (done or failed)

    @property
    def ids(self) -> tuple[int, ...]:
        return self.request.ids

    @property
    def prefix_len(self) -> int:
        return self.request.prefix_len

    @property
    def cache_salt(self) -> str | None:
        return self.request.cache_salt

    def leave(self, error: BaseException | None = None) -> None:
        """It left a `DecodeBatch`: finished, or failed with `error`."""
        if error is not None:
            self.failure = error
        else:
            self.finish()
        self.left.set()

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


class RunResults:
    """What a stream over one `_Run` reports (`GenerationStream`, `batching.BatchedStream`)."""

    _run: _Run

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


class GenerationStream(RunResults):
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

    def __init__(self, model: Any, tokenizer: Any, decoder: Decoder | None = None, *,
                 prefix_bytes: int = DEFAULT_PREFIX_BYTES) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.decoder = decoder if decoder is not None else BatchDecoder(model, tokenizer)
        # the prompt starts its batches (`new_batch`: `generate_many`, `MicroBatcher`) reuse
        self.prefixes = PrefixStore(prefix_bytes)

    def request(self, ids: Sequence[int], *, ptokens: PTokens | None = None,
                max_new_tokens: int = 32, temperature: float | None = None,
                prefix_len: int = 0, seed: int | None = None,
                cache_salt: str | None = None) -> DecodeRequest:
        """A validated `DecodeRequest` (InvalidInputError names what is wrong)."""
        check_generation_args(max_new_tokens, temperature)
        if not ids:
            raise InvalidInputError("generation needs at least one prompt token.")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise InvalidInputError("seed must be None or an int.")
        if isinstance(prefix_len, bool) or not isinstance(prefix_len, int) \
                or not 0 <= prefix_len <= len(ids):
            raise InvalidInputError("prefix_len must be an int between 0 and the prompt's length.")
        return DecodeRequest(ids=tuple(int(i) for i in ids), ptokens=ptokens,
                             max_new_tokens=max_new_tokens,
                             temperature=float(temperature) if temperature else None,
                             prefix_len=prefix_len, seed=seed, cache_salt=cache_salt)

    def stream(self, ids: Sequence[int], *, ptokens: PTokens | None = None,
               max_new_tokens: int = 32, temperature: float | None = None,
               stop: Sequence[str] | None = (), prefix_len: int = 0,
               seed: int | None = None) -> GenerationStream:
        """A cancellable stream of text pieces after `ids` (greedy unless `temperature > 0`,
        then sampled with `seed`); the text ends before the first of the `stop` strings."""
        request = self.request(ids, ptokens=ptokens, max_new_tokens=max_new_tokens,
                               temperature=temperature, prefix_len=prefix_len, seed=seed)
        return GenerationStream(self.decoder, self.tokenizer, request, check_stop(stop),
                                model_eos_ids(self.model, self.tokenizer))

    def generate(self, ids: Sequence[int], **kwargs: Any) -> Generation:
        """`stream(...)` run to its end: the whole text, token counts and finish reason."""
        s = self.stream(ids, **kwargs)
        for _ in s:
            pass
        return s.result

    def batch_row(self, ids: Sequence[int], *, ptokens: PTokens | None = None,
                  max_new_tokens: int = 32, stop: Sequence[str] | None = (),
                  temperature: float | None = None, seed: int | None = None,
                  prefix_len: int = 0, cache_salt: str | None = None) -> _Run:
        """One validated request as a `DecodeBatch` row: its `result` is final once `left` is
        set (`failure` holds the error of a batch that failed). prefix_len / cache_salt: the
        leading ids later rows with the same salt may start from (`PrefixStore`)."""
        request = self.request(ids, ptokens=ptokens, max_new_tokens=max_new_tokens,
                               temperature=temperature, seed=seed, prefix_len=prefix_len,
                               cache_salt=cache_salt)
        run = _Run(self.tokenizer, request, check_stop(stop),
                   model_eos_ids(self.model, self.tokenizer))
        run.sampler = Sampler.for_request(self.model, request)
        return run

    def new_batch(self, ptokens: PTokens | None) -> DecodeBatch:
        """An empty `DecodeBatch` on this model (rows from `batch_row`)."""
        return DecodeBatch(self.model, ptokens, pad_id=pad_id(self.model, self.tokenizer),
                           prefixes=self.prefixes)

    def generate_many(self, prompts: Sequence[Sequence[int]], *,
                      ptokens: PTokens | None = None, max_new_tokens: int = 32,
                      stop: Sequence[str] | None = (), temperature: float | None = None,
                      seeds: Sequence[int | None] | None = None,
                      prefix_lens: Sequence[int] | None = None, cache_salt: str | None = None,
                      batch_size: int = 16,
                      stops: Sequence[Sequence[str]] | None = None) -> list[Generation]:
        """Answers to several prompts decoded together in one `DecodeBatch` of at most
        `batch_size` rows: a prompt takes the place of one that finished at the next step.
        Each gets what `generate` returns for it alone (same text, counts and finish reason;
        argmax ties aside, float rounding differs with the batch shape); sampled rows
        (`temperature > 0`) use their own seed from `seeds`. prefix_lens / cache_salt: each
        prompt's reusable prefix and who may reuse it (`batch_row`). stops: each prompt's own
        stop strings, instead of `stop` for all."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInputError("batch_size must be an int ≥ 1.")
        if seeds is not None and len(seeds) != len(prompts):
            raise InvalidInputError("seeds must hold one seed per prompt.")
        if prefix_lens is not None and len(prefix_lens) != len(prompts):
            raise InvalidInputError("prefix_lens must hold one length per prompt.")
        if stops is not None and len(stops) != len(prompts):
            raise InvalidInputError("stops must hold one list of stop strings per prompt.")
        runs = [self.batch_row(p, ptokens=ptokens, max_new_tokens=max_new_tokens,
                               stop=stop if stops is None else stops[i],
                               temperature=temperature, seed=None if seeds is None else seeds[i],
                               prefix_len=0 if prefix_lens is None else prefix_lens[i],
                               cache_salt=cache_salt)
                for i, p in enumerate(prompts)]
        batch, waiting = self.new_batch(ptokens), list(reversed(runs))
        while waiting or len(batch):
            free = min(batch_size - len(batch), len(waiting))
            batch.add([waiting.pop() for _ in range(free)])
            batch.step()
        for r in runs:
            if r.failure is not None:
                raise r.failure
        return [r.result for r in runs]
