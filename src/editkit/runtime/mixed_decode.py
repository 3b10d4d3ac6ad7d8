"""Greedy decoding in a cheaper dtype after a full-precision prefill.

On a CPU without native bf16 (AVX2 only), bf16 matmuls are emulated: prefill of a prompt is
compute-bound and 2-3x slower in bf16, but decoding one token at a time is memory-bound (every
weight is read once per token) and bf16 halves those bytes. So the prompt goes through the fp32
model, its KV cache is cast, and the new tokens come from a bf16 copy of the weights
(docs/benchmarks.md measures it). The first new token is the fp32 model's own; later ones may
differ from pure fp32 decoding where two candidates are within bf16 rounding.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch

from ..errors import InvalidInputError
from .prefix_cache import greedy_steps

DECODE_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def decode_copy(model: Any, dtype: str) -> Any:
    """A copy of `model` in `dtype` for decoding (the original stays as it is)."""
    if dtype not in DECODE_DTYPES:
        raise InvalidInputError(f"decode_dtype must be one of {sorted(DECODE_DTYPES)}, "
                                f"not {dtype!r}.")
    if getattr(model, "is_quantized", False) or getattr(model, "quantization_method", None):
        raise InvalidInputError("decode_dtype needs a full-precision model, not a quantized one.")
    return copy.deepcopy(model).to(DECODE_DTYPES[dtype]).eval()


def _cast_cache(cache: Any, dtype: torch.dtype) -> None:
    """Cast every layer's keys and values in place (transformers 5 layers, or 4.x lists)."""
    if hasattr(cache, "layers"):
        for layer in cache.layers:
            layer.keys, layer.values = layer.keys.to(dtype), layer.values.to(dtype)
    else:
        cache.key_cache = [k.to(dtype) for k in cache.key_cache]
        cache.value_cache = [v.to(dtype) for v in cache.value_cache]


@torch.no_grad()
def greedy_mixed(model: Any, decode_model: Any, ptokens: Any, prefix: Sequence[int], *,
                 max_new_tokens: int, eos_ids: Sequence[int]) -> list[int]:
    """Greedy new token ids after `prefix`: prefill with `model`, decode with `decode_model`."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    out = greedy_steps(model, cache, ptokens, prefix, max_new_tokens=1, eos_ids=eos_ids)
    if max_new_tokens == 1 or out[-1] in eos_ids:
        return out
    _cast_cache(cache, decode_model.dtype)
    return out + greedy_steps(decode_model, cache, None, out, max_new_tokens=max_new_tokens - 1,
                              eos_ids=eos_ids)
