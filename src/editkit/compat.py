"""The one home of transformers / architecture compatibility shims.

Everything in `editkit.runtime` and the integrations goes through these helpers instead of
calling `model(...)` with version-dependent keywords itself, so a new model family or
transformers release is adapted here, once:

- `forward_logits`: a forward pass that asks for the logits of some positions only
  (`logits_to_keep`), falls back when the architecture refuses the argument, and picks the kept
  rows itself when a model silently ignores it (swallowed by `**kwargs`);
- `cache_kw` / `new_cache` / `crop_cache` / `cast_cache`: KV caches across transformers versions
  (`cache` vs `past_key_values`; cache layers in transformers 5, key/value lists in 4.x);
- `eos_ids`, `context_length`, `model_device`: what a model's configs call these.
"""
from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["cache_kw", "cast_cache", "context_length", "crop_cache", "eos_ids",
           "forward_logits", "model_device", "new_cache"]


def model_device(model: Any) -> torch.device:
    """Where the model's input embeddings (and so its inputs) live."""
    return model.get_input_embeddings().weight.device


def _parameters(model: Any) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(model.forward).parameters)


def cache_kw(model: Any) -> str:
    """The forward argument for a KV cache: `cache` (transformers ≥ 5.2x) or `past_key_values`."""
    return "cache" if "cache" in _parameters(model) else "past_key_values"


def new_cache(model: Any) -> Any:
    """An empty dynamic KV cache for `model`."""
    from transformers import DynamicCache

    return DynamicCache(config=model.config)


def crop_cache(cache: Any, keep: int) -> None:
    """Drop everything after the first `keep` positions (a negative crop removes that many)."""
    extra = cache.get_seq_length() - keep
    if extra > 0:
        cache.crop(-extra)


def cast_cache(cache: Any, dtype: torch.dtype) -> None:
    """Cast every layer's keys and values in place (transformers 5 layers, or 4.x lists)."""
    if hasattr(cache, "layers"):
        for layer in cache.layers:
            layer.keys, layer.values = layer.keys.to(dtype), layer.values.to(dtype)
    else:
        cache.key_cache = [k.to(dtype) for k in cache.key_cache]
        cache.value_cache = [v.to(dtype) for v in cache.value_cache]


def eos_ids(model: Any, tokenizer: Any) -> list[int]:
    """The ids that end an answer: the generation config's EOS (an id or a list), else the
    tokenizer's."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        eos = getattr(tokenizer, "eos_token_id", None)
    return [int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos]) if e is not None]


def context_length(model: Any) -> int | None:
    """The model's context window in tokens, where its config states one."""
    cfg = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(cfg, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def forward_logits(model: Any, inputs_embeds: torch.Tensor, *,
                   keep: int | Sequence[int] | None = None,
                   attention_mask: torch.Tensor | None = None,
                   position_ids: torch.Tensor | None = None,
                   cache: Any = None) -> torch.Tensor:
    """Logits (rows, vocab) of the one sequence in `inputs_embeds` (batch of 1).

    keep: None for every position; an int n for the last n positions; an increasing list of
    positions (counted in what is fed now, not in what `cache` already holds) for those rows.
    The model is asked for only those rows (`logits_to_keep`: on a long prompt that skips most
    of the output projection). If its forward refuses the argument (TypeError at the call),
    it is called without; if it ignores it (a `**kwargs` that swallows it), all rows come back and
    the kept ones are picked here, so the result never depends on which case applies.

    cache: a KV cache to read and extend (its positions precede the ones fed); None runs without.
    """
    kwargs: dict[str, Any] = {"inputs_embeds": inputs_embeds}
    if attention_mask is not None:
        kwargs["attention_mask"] = attention_mask
    if position_ids is not None:
        kwargs["position_ids"] = position_ids
    if cache is not None:
        kwargs[cache_kw(model)] = cache
    kwargs["use_cache"] = cache is not None
    n = int(inputs_embeds.shape[1])
    if keep is None:
        rows: list[int] | None = None
    elif isinstance(keep, int):
        rows = list(range(n - keep, n))
    else:
        rows = [int(k) for k in keep]
    if rows is None:
        return model(**kwargs).logits[0]
    arg: int | torch.Tensor = keep if isinstance(keep, int) else torch.tensor(
        rows, device=inputs_embeds.device)
    try:
        logits = model(**kwargs, logits_to_keep=arg).logits[0]
    except TypeError as exc:  # an architecture without logits_to_keep refuses it at the call
        if "logits_to_keep" not in str(exc):
            raise
        logits = model(**kwargs).logits[0]
    if logits.shape[0] != len(rows):  # every position was projected (the argument was refused
        logits = logits[rows]         # or silently ignored): pick the kept rows
    return logits
