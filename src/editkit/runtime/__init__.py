"""The one decode and scoring stack: every path (SDK, evaluation, training, LangChain) calls it.

- `scoring`: packed teacher-forced scoring (one forward over a prefix and a tree of branches);
- `generation`: generate / stream with stop sequences, cancellation and a finish reason;
- `prefix_cache`, `mixed_decode`: faster variants of the same computations, chosen behind
  the generation and scoring entry points rather than by the callers.
"""
