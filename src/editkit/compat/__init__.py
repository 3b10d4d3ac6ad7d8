"""The one home of transformers / architecture compatibility shims (`cache.py`, `model.py`,
`logs.py`; every name is imported from here).

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
from .cache import (
    cache_kw,
    cast_cache,
    crop_cache,
    decode_cache,
    drop_cache_front,
    join_caches,
    new_cache,
    row_kv,
    sliding_window,
    stack_kv,
)
from .logs import gguf_progress_follows_transformers, quiet_progress_bars, quiet_repeated_logs
from .model import (
    context_length,
    embedding_scale,
    eos_ids,
    forward_last_logits,
    forward_logits,
    model_device,
)

__all__ = ["cache_kw", "cast_cache", "context_length", "crop_cache", "decode_cache",
           "drop_cache_front",
           "eos_ids", "embedding_scale", "forward_last_logits", "forward_logits", "join_caches",
           "model_device", "new_cache", "row_kv", "stack_kv",
           "gguf_progress_follows_transformers", "quiet_progress_bars", "quiet_repeated_logs",
           "sliding_window"]
