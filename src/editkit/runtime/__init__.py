"""The one decode and scoring stack: every path (SDK, evaluation, training, LangChain) calls it.

- `scoring`: packed teacher-forced scoring (one forward over a prefix and a tree of branches);
- `generation`: generate / stream with stop sequences, cancellation and a finish reason,
  built from `requests` (argument checks, `DecodeRequest`, `Sampler`), `decode_batch` (the
  one decode loop), `prefix_store` (its stored prompt starts), `decoders` (which computation
  serves a request) and `text` (stop sequences, whitespace, incremental detokenizing);
- `prefix_cache`, `mixed_decode`: faster variants of the same computations, chosen behind
  the generation and scoring entry points rather than by the callers.
"""
