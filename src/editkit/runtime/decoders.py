"""The decoders: how one request's tokens are computed, chosen once per model by `decoder_for`.

- `BatchDecoder`: a batch of one through `DecodeBatch` (greedy or sampled); always available,
  and the fallback of the others;
- `PrefixCacheDecoder`: greedy, reusing the prompt prefix's KV cache (`runtime.prefix_cache`);
- `MixedPrecisionDecoder`: greedy, fp32 prefill then a bf16/fp16 copy (`runtime.mixed_decode`).

They are kept apart from the decode loop and the streams because they are the one place where
a model's settings pick a computation: callers never choose. `InProcessEngine` calls
`decoder_for` (`runtime.engine`); `TextGenerator` runs a decoder in each stream's worker thread
and defaults to `BatchDecoder` (`runtime.generation`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .decode_batch import DecodeBatch, pad_id
from .mixed_decode import greedy_mixed
from .prefix_cache import Emit, PrefixCache
from .requests import Decoder, DecodeRequest, Sampler

__all__ = ["BatchDecoder", "MixedPrecisionDecoder", "PrefixCacheDecoder", "decoder_for"]


@dataclass(eq=False)
class _OneRow:
    """A lone request as a `DecodeBatch` row (its stream's `_Run` finishes it)."""

    ids: tuple[int, ...]
    sampler: Sampler | None
    emit: Emit
    prefix_len: int = 0
    cache_salt: str | None = None

    def leave(self, error: BaseException | None = None) -> None:
        pass


class BatchDecoder:
    """One request decoded as a batch of one through `DecodeBatch`: the same steps, sampler and
    numbers as the batched paths (`generate_many`, `MicroBatcher`), greedy or sampled."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.pad_id = pad_id(model, tokenizer)

    def decode(self, request: DecodeRequest, emit: Emit) -> None:
        batch = DecodeBatch(self.model, request.ptokens, pad_id=self.pad_id)
        batch.add([_OneRow(request.ids, Sampler.for_request(self.model, request), emit)])
        while len(batch):
            batch.step()


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
    cacheable prefix), else bf16/fp16 decoding (when on), else `BatchDecoder`."""
    decoder: Decoder = BatchDecoder(model, tokenizer)
    if decode_model is not None:
        decoder = MixedPrecisionDecoder(model, decode_model, decoder)
    if prefix_cache is not None:
        decoder = PrefixCacheDecoder(prefix_cache, decoder)
    return decoder
