"""The one home of transformers / architecture compatibility shims.

Everything in `editkit.runtime` and the integrations goes through these helpers instead of
calling `model(...)` with version-dependent keywords itself, so a new model family or
transformers release is adapted here, once:

- `forward_logits`: a forward pass that asks for the logits of some positions only
  (`logits_to_keep`), falls back when the architecture refuses the argument, and picks the kept
  rows itself when a model silently ignores it (swallowed by `**kwargs`);
- `cache_kw` / `new_cache` / `decode_cache` / `crop_cache` / `cast_cache` / `join_caches` /
  `drop_cache_front` / `row_kv` / `stack_kv`:
  KV caches across transformers versions (`cache` vs `past_key_values`; cache layers in
  transformers 5, key/value lists in 4.x);
- `sliding_window`: sliding-window attention layers (Gemma 3) get full cache layers, and packed
  masks get the window by position (`forward_logits`);
- `eos_ids`, `context_length`, `model_device`: what a model's configs call these;
- `embedding_scale`: the factor a family's input embedding multiplies looked-up rows by (Gemma:
  sqrt(hidden size)), which P-Token rows must get too;
- `quiet_repeated_logs`: a library warning that repeats on every call is shown once per process
  (bitsandbytes' 8-bit matmul logs the same line for every layer of every forward);
- `quiet_progress_bars` / `gguf_progress_follows_transformers`: the libraries' progress bars off
  (the CLI, unless --verbose), the GGUF conversion's included.
"""
from __future__ import annotations

import functools
import inspect
import logging
import sys
from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["cache_kw", "cast_cache", "context_length", "crop_cache", "decode_cache",
           "drop_cache_front",
           "eos_ids", "embedding_scale", "forward_last_logits", "forward_logits", "join_caches",
           "model_device", "new_cache", "row_kv", "stack_kv",
           "gguf_progress_follows_transformers", "quiet_progress_bars", "quiet_repeated_logs",
           "sliding_window"]


class _OncePerProcess(logging.Filter):
    """Lets each distinct message through once (the same text again is dropped)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[tuple[str, int, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, record.getMessage())
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


_ONCE = _OncePerProcess()
REPEATING_LOGGERS = ("bitsandbytes",)
"""Libraries whose warnings repeat per call (their loggers and every child logger get `_ONCE`)."""


def quiet_repeated_logs(prefixes: Sequence[str] = REPEATING_LOGGERS) -> None:
    """Show each message of these libraries' loggers once per process.

    A logger's filters only see the records created on that logger, not its children's, so the
    filter goes on every logger under each prefix that exists now: call this after the library
    is imported (`load_model` does, for quantized models). Idempotent.
    """
    names = [n for n in logging.root.manager.loggerDict
             if any(n == p or n.startswith(p + ".") for p in prefixes)]
    for name in [*prefixes, *names]:
        log = logging.getLogger(name)
        if _ONCE not in log.filters:
            log.addFilter(_ONCE)


def quiet_progress_bars() -> None:
    """Turn off the libraries' progress bars in this process: transformers' ("Loading weights",
    "Writing model shards"), huggingface_hub's downloads, and so the GGUF conversion's
    (`gguf_progress_follows_transformers`). The CLI calls this unless `--verbose`; the Python
    API never does, so a library user keeps the libraries' defaults.

    Cheap when transformers is not imported yet (the CLI's `--help` stays fast): transformers
    reads huggingface_hub's switch when it is imported, so setting that one is enough; once it
    is imported, its own switch is set too.
    """
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()
    hf_logging = sys.modules.get("transformers.utils.logging")
    if hf_logging is not None:
        hf_logging.disable_progress_bar()


def gguf_progress_follows_transformers() -> None:
    """Make the GGUF conversion's bar ("Converting and de-quantizing GGUF tensors") obey
    transformers' progress-bar switch (`transformers.utils.logging.disable_progress_bar`), as its
    other bars do: transformers draws that one with `tqdm.auto` directly. The switch is on by
    default, so nothing changes unless someone (the CLI) turned it off. Idempotent."""
    try:
        from transformers import modeling_gguf_pytorch_utils as gguf_utils
        from transformers.utils import logging as hf_logging
    except ImportError:  # a transformers without this module: nothing to route
        return
    if hasattr(gguf_utils, "tqdm"):
        gguf_utils.tqdm = hf_logging.tqdm


def embedding_scale(embedding: Any) -> float:
    """What `embedding` multiplies the rows it looks up by: 1 for a plain `nn.Embedding`,
    sqrt(hidden size) for Gemma's scaled embedding (it scales inside `forward`, so the model
    itself never scales `inputs_embeds`). P-Token rows live in the table's space (the text init
    copies table rows) and are multiplied by the same factor, so an untrained row acts exactly
    as the token it was copied from."""
    scale = getattr(embedding, "scalar_embed_scale", None)
    if scale is None:
        scale = getattr(embedding, "embed_scale", None)
    return 1.0 if scale is None else float(scale)


def model_device(model: Any) -> torch.device:
    """Where the model's input embeddings (and so its inputs) live."""
    return model.get_input_embeddings().weight.device


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


def _with_sliding_window(model: Any, mask: torch.Tensor, position_ids: torch.Tensor | None
                         ) -> torch.Tensor | dict[str, torch.Tensor]:
    """A packed (1, 1, new, all) boolean mask as the per-layer-type masks of a sliding-window
    model: full-attention layers take it as it is; sliding layers also drop keys whose position
    is `window` or more before the query's (position, not index: packed trees restart their
    positions). Cached keys are a prefix, at positions 0..cached-1."""
    window = sliding_window(model)
    if window is None or mask.dtype != torch.bool or mask.dim() != 4:
        return mask
    new, total = mask.shape[-2], mask.shape[-1]
    q_pos = (position_ids[0] if position_ids is not None
             else torch.arange(total - new, total, device=mask.device))
    k_pos = torch.cat([torch.arange(total - new, device=mask.device), q_pos.to(mask.device)])
    near = (q_pos.to(mask.device)[:, None] - k_pos[None, :]) < window
    return {"full_attention": mask, "sliding_attention": mask & near[None, None]}


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


def forward_last_logits(model: Any, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                        position_ids: torch.Tensor, cache: Any) -> torch.Tensor:
    """Logits (batch, vocab) at the last position of every row of a left-padded batch, reading
    and extending `cache`. `attention_mask` is the 2D padding mask over everything the cache
    holds plus what is fed; the model builds its causal (and sliding-window) masks from it."""
    kwargs: dict[str, Any] = {"inputs_embeds": inputs_embeds, "attention_mask": attention_mask,
                              "position_ids": position_ids, cache_kw(model): cache,
                              "use_cache": True}
    try:
        logits = model(**kwargs, logits_to_keep=1).logits
    except TypeError as exc:  # an architecture without logits_to_keep refuses it at the call
        if "logits_to_keep" not in str(exc):
            raise
        logits = model(**kwargs).logits
    return logits[:, -1]


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
        kwargs["attention_mask"] = _with_sliding_window(model, attention_mask, position_ids)
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
