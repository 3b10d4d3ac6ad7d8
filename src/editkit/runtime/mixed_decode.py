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

from ..compat import cast_cache, new_cache
from ..errors import InvalidInputError
from .prefix_cache import Emit, greedy_steps

DECODE_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def decode_copy(model: Any, dtype: str) -> Any:
    """A copy of `model` in `dtype` for decoding (the original stays as it is)."""
    if dtype not in DECODE_DTYPES:
        raise InvalidInputError(f"decode_dtype must be one of {sorted(DECODE_DTYPES)}, "
                                f"not {dtype!r}.")
    if getattr(model, "is_quantized", False) or getattr(model, "quantization_method", None):
        raise InvalidInputError("decode_dtype needs a full-precision model, not a quantized one.")
    return copy.deepcopy(model).to(DECODE_DTYPES[dtype]).eval()


@torch.no_grad()
def greedy_mixed(model: Any, decode_model: Any, ptokens: Any, prefix: Sequence[int], *,
                 max_new_tokens: int, emit: Emit) -> None:
    """Greedy new tokens after `prefix`, each handed to `emit` (False from it ends generation):
    prefill with `model`, decode with `decode_model`."""
    cache = new_cache(model)
    first = greedy_steps(model, cache, ptokens, prefix, max_new_tokens=1, emit=emit)
    if first is None or max_new_tokens == 1:
        return
    cast_cache(cache, decode_model.dtype)
    greedy_steps(decode_model, cache, None, [first], max_new_tokens=max_new_tokens - 1,
                 emit=emit)
