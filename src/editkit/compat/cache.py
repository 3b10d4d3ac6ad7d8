"""KV caches across transformers versions (`cache` vs `past_key_values`; cache layers in
transformers 5, key/value lists in 4.x), and sliding-window attention layers (Gemma 3), which get
full cache layers so that a cached prefix is never cut at the window."""
from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence
from typing import Any

import torch


def _parameters(model: Any) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(model.forward).parameters)


def cache_kw(model: Any) -> str:
    """The forward argument for a KV cache: `cache` (transformers ≥ 5.2x) or `past_key_values`."""
    return "cache" if "cache" in _parameters(model) else "past_key_values"


def sliding_window(model: Any) -> int | None:
    """The window of a model whose layers include sliding-window attention (Gemma 3: 5 of
    every 6), else None."""
    cfg = getattr(model, "config", None)
    cfg = getattr(cfg, "text_config", None) or cfg
    window = getattr(cfg, "sliding_window", None)
    types = getattr(cfg, "layer_types", None) or ()
    return int(window) if window and "sliding_attention" in types else None


@functools.cache
def _growing_layer_class() -> Any:
    """A transformers 5 cache layer that appends into spare capacity instead of concatenating.

    `DynamicLayer.update` does `torch.cat([keys, new])` for every layer at every step: a copy of
    the whole cache per new token. With 16 rows and ~100 cached tokens that copying took about a
    fifth of a decode step on a CPU. This layer keeps buffers with room to grow (doubling) and
    returns views of the filled part. Assigning `keys` / `values` (which `batch_select_indices`,
    `crop`, `cast_cache`, `join_caches` and `drop_cache_front` do) replaces the buffers, so
    everything that works on a dynamic layer works on this one.
    """
    from transformers.cache_utils import DynamicLayer

    class GrowingLayer(DynamicLayer):  # type: ignore[misc]
        _k: torch.Tensor | None = None
        _v: torch.Tensor | None = None
        _n = 0

        @property  # type: ignore[override]
        def keys(self) -> torch.Tensor | None:
            return None if self._k is None else self._k[..., : self._n, :]

        @keys.setter
        def keys(self, t: torch.Tensor | None) -> None:
            self._k = t
            self._n = 0 if t is None or t.dim() < 2 else t.shape[-2]

        @property  # type: ignore[override]
        def values(self) -> torch.Tensor | None:
            return None if self._v is None else self._v[..., : self._n, :]

        @values.setter
        def values(self, t: torch.Tensor | None) -> None:
            self._v = t

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor,
                   *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
            if not self.is_initialized or self._k is None or self._k.dim() < 2:
                self.device, self.is_initialized = key_states.device, True
                self._k, self._v, self._n = key_states, value_states, key_states.shape[-2]
                return self.keys, self.values  # type: ignore[return-value]
            assert self._v is not None
            n, new = self._n, key_states.shape[-2]
            if n + new > self._k.shape[-2]:  # out of room: double (one copy per doubling)
                cap = max(2 * self._k.shape[-2], n + new)
                k = self._k.new_empty((*self._k.shape[:-2], cap, self._k.shape[-1]))
                v = self._v.new_empty((*self._v.shape[:-2], cap, self._v.shape[-1]))
                k[..., :n, :], v[..., :n, :] = self._k[..., :n, :], self._v[..., :n, :]
                self._k, self._v = k, v
            self._k[..., n: n + new, :] = key_states
            self._v[..., n: n + new, :] = value_states
            self._n = n + new
            return self.keys, self.values  # type: ignore[return-value]

    return GrowingLayer


def decode_cache(model: Any) -> Any:
    """`new_cache` for a decode loop that adds one token per step (`DecodeBatch`): the same
    full cache layers, appending in place (`_growing_layer_class`). Models whose layers are not
    all attention layers (recurrent hybrids), and transformers without cache layers, get
    `new_cache`."""
    cfg = getattr(model, "config", None)
    cfg = getattr(cfg, "text_config", None) or cfg
    types = set(getattr(cfg, "layer_types", None) or ())
    if not types <= {"full_attention", "sliding_attention"}:
        return new_cache(model)
    try:
        from transformers import DynamicCache
        layer_class = _growing_layer_class()
    except ImportError:
        return new_cache(model)
    cache = DynamicCache()
    if getattr(cache, "layer_class_to_replicate", None) is None:
        return new_cache(model)
    cache.layer_class_to_replicate = layer_class
    return cache


def new_cache(model: Any) -> Any:
    """An empty dynamic KV cache for `model`.

    Sliding-window layers get ordinary (full) cache layers here: editkit crops caches back to a
    prefix and feeds packed trees with their own masks, and a windowed cache layer can do
    neither (it keeps only the window and returns only the window's keys). The window is applied
    by the mask instead: the model's own masks when none is given, `forward_logits` for packed
    masks.
    """
    from transformers import DynamicCache

    return DynamicCache() if sliding_window(model) else DynamicCache(config=model.config)


def crop_cache(cache: Any, keep: int) -> None:
    """Drop everything after the first `keep` positions (a negative crop removes that many)."""
    extra = cache.get_seq_length() - keep
    if extra > 0:
        cache.crop(-extra)


def cast_cache(cache: Any, dtype: torch.dtype) -> None:
    """Cast every layer's keys and values in place (transformers 5 layers, or 4.x lists)."""
    keys, values, put = _kv_lists(cache)
    put([k.to(dtype) for k in keys], [v.to(dtype) for v in values])


def _kv_lists(cache: Any) -> tuple[list[torch.Tensor], list[torch.Tensor], Any]:
    """Every layer's keys and values, and a setter for them (transformers 5 layers, 4.x lists)."""
    if hasattr(cache, "layers"):
        def put(keys: list[torch.Tensor], values: list[torch.Tensor]) -> None:
            for layer, k, v in zip(cache.layers, keys, values, strict=True):
                layer.keys, layer.values = k, v
        return ([layer.keys for layer in cache.layers], [layer.values for layer in cache.layers],
                put)

    def put_lists(keys: list[torch.Tensor], values: list[torch.Tensor]) -> None:
        cache.key_cache, cache.value_cache = keys, values
    return list(cache.key_cache), list(cache.value_cache), put_lists


def join_caches(cache: Any, other: Any) -> None:
    """Append `other`'s rows to `cache` (in place), both left-padded to the longer of the two.

    The new leading columns are padding: the caller's 2D attention mask must hide them (the
    rows' positions are explicit, so padding in front changes nothing else). This is how a
    sequence joins a batch that is already decoding (`runtime.generation.DecodeBatch`)."""
    keys, values, put = _kv_lists(cache)
    okeys, ovalues, _ = _kv_lists(other)
    width = max(keys[0].shape[-2], okeys[0].shape[-2])

    def grow(t: torch.Tensor) -> torch.Tensor:  # (batch, heads, time, dim): pad time in front
        return torch.nn.functional.pad(t, (0, 0, width - t.shape[-2], 0))

    put([torch.cat([grow(a), grow(b)]) for a, b in zip(keys, okeys, strict=True)],
        [torch.cat([grow(a), grow(b)]) for a, b in zip(values, ovalues, strict=True)])


KV = list[tuple[torch.Tensor, torch.Tensor]]
"""One row's keys and values, per layer: (1, heads, positions, head dim) each."""


def row_kv(cache: Any, row: int, spans: Sequence[tuple[int, int]]) -> KV:
    """Copies of one row's keys and values at the given column spans, joined in order, per
    layer. `DecodeBatch` keeps a prompt's prefix this way: its leading columns, then the columns
    of its own tokens after the padding."""
    keys, values, _ = _kv_lists(cache)
    return [(torch.cat([k[row:row + 1, :, a:b] for a, b in spans], dim=-2),
             torch.cat([v[row:row + 1, :, a:b] for a, b in spans], dim=-2))
            for k, v in zip(keys, values, strict=True)]


def stack_kv(model: Any, rows: Sequence[tuple[KV | None, int]], columns: int) -> Any:
    """A new `decode_cache` of `columns` positions for `len(rows)` rows: row b holds the first
    n positions of its `KV` (or nothing), then zeros up to `columns`, which the caller's mask
    hides. `DecodeBatch` starts new rows from their stored prefixes this way."""
    template = next(kv for kv, n in rows if kv is not None and n)
    out = decode_cache(model)
    for i, (k0, v0) in enumerate(template):
        shape = (len(rows), k0.shape[1], columns, k0.shape[-1])
        k = k0.new_zeros(shape)
        v = v0.new_zeros((len(rows), v0.shape[1], columns, v0.shape[-1]))
        for b, (kv, n) in enumerate(rows):
            if kv is not None and n:
                k[b, :, :n] = kv[i][0][0, :, :n]
                v[b, :, :n] = kv[i][1][0, :, :n]
        out.update(k, v, i)
    return out


def drop_cache_front(cache: Any, n: int) -> None:
    """Drop the first `n` columns of every layer (columns that are padding for every row)."""
    if n > 0:
        keys, values, put = _kv_lists(cache)
        put([k[..., n:, :] for k in keys], [v[..., n:, :] for v in values])
