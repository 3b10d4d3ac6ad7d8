"""Reuse the key/value cache of a prompt's shared prefix across questions about one edit.

An IKE prompt is ~1,000 tokens of demonstrations and the fact before a ~10-token question; asking
several questions about one edit recomputes that prefix every time. `PrefixCache` keeps the KV
cache of the last few prefixes (LRU), and `greedy` / `continuations` feed only what follows it.
Each call crops the cache back to the prefix afterwards, so entries stay reusable; a lock per
cache serialises the calls that share it.

Entries are keyed by the prefix ids *and* a digest of the P-Token rows that embedded them, so a
swapped or retrained P-Token set can never be served another set's keys and values.

`CachedScorer` is the scoring variant chooser `EditableLM.score` calls: the per-edit prefix cache
when it is on, else the always-on cache of the edit-independent head, else a plain packed forward.
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..compat import crop_cache, forward_logits, model_device, new_cache
from ..errors import InvalidInputError
from ..ptokens import PTokens
from .scoring import input_embeds, score_continuations

Emit = Callable[[int], bool]
"""Hands one new token to the consumer; False means: stop generating."""


def ptokens_digest(ptokens: PTokens | None) -> str | None:
    """A content fingerprint of a P-Token set's rows (None without P-Tokens): equal digests mean
    equal embeddings, whatever object holds them, and an in-place update changes it."""
    if ptokens is None:
        return None
    rows = ptokens.layer.weight.detach().to("cpu", torch.float32).contiguous()
    h = hashlib.blake2b(rows.numpy().tobytes(), digest_size=16)
    h.update(f"{ptokens.layer.first_id}:{tuple(rows.shape)}".encode())
    return h.hexdigest()


@torch.no_grad()
def greedy_steps(model: Any, cache: Any, ptokens: PTokens | None, feed: Sequence[int], *,
                 max_new_tokens: int, emit: Emit) -> int | None:
    """Greedy tokens after `feed`, which extends what `cache` already holds (the cache grows).

    Each token goes to `emit`; generation ends when it returns False or after `max_new_tokens`.
    Returns the last token when every `emit` said to go on (the caller may continue from it),
    else None.
    """
    dev = model_device(model)
    feed = list(feed)
    last: int | None = None
    for _ in range(max_new_tokens):
        x = torch.tensor([feed], device=dev)
        logits = forward_logits(model, input_embeds(model, ptokens, x), keep=1, cache=cache)
        last = int(logits[-1].argmax())
        if not emit(last):
            return None
        feed = [last]
    return last


class PrefixCache:
    """LRU of prefix KV caches for one model, `max_entries` prefixes deep."""

    def __init__(self, model: Any, max_entries: int = 4) -> None:
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
            raise InvalidInputError(f"prefix_cache must be an int ≥ 1 (entries), not "
                                    f"{max_entries!r}.")
        self.model, self.max_entries = model, max_entries
        self._entries: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self._lock = threading.RLock()
        self.hits = self.misses = 0

    @torch.no_grad()
    def _get(self, prefix: Sequence[int], ptokens: PTokens | None) -> Any:
        """The cache holding `prefix` (computed on a miss). Caller holds the lock."""
        key = (ptokens_digest(ptokens), *prefix)
        hit = self._entries.get(key)
        if hit is not None:
            self.hits += 1
            self._entries.move_to_end(key)
            return hit
        self.misses += 1
        cache = new_cache(self.model)
        ids = torch.tensor([list(prefix)], device=model_device(self.model))
        forward_logits(self.model, input_embeds(self.model, ptokens, ids), keep=1, cache=cache)
        self._entries[key] = cache
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return cache

    @torch.no_grad()
    def greedy(self, ids: Sequence[int], prefix_len: int, ptokens: PTokens | None, *,
               max_new_tokens: int, emit: Emit) -> None:
        """Greedy continuation of `ids`, whose first `prefix_len` tokens come from the cache;
        each new token goes to `emit` (False from it ends generation)."""
        # At least one token is always fed: the last position's logits are not cached.
        cut = min(prefix_len, len(ids) - 1)
        if cut < 1:  # nothing to reuse
            greedy_steps(self.model, new_cache(self.model), ptokens, ids,
                         max_new_tokens=max_new_tokens, emit=emit)
            return
        with self._lock:
            cache = self._get(ids[:cut], ptokens)
            try:
                greedy_steps(self.model, cache, ptokens, ids[cut:],
                             max_new_tokens=max_new_tokens, emit=emit)
            finally:
                crop_cache(cache, cut)

    @torch.no_grad()
    def continuations(self, prefix: Sequence[int], prefix_len: int, ptokens: PTokens | None,
                      continuations: Sequence[Sequence[int]]) -> list[list[float]]:
        """`scoring.score_continuations` with the first `prefix_len` tokens from the cache."""
        cut = min(prefix_len, len(prefix) - 1)  # the prefix's last token predicts the targets
        if cut < 1:  # nothing to reuse
            return score_continuations(self.model, ptokens, prefix, continuations)
        with self._lock:
            cache = self._get(prefix[:cut], ptokens)
            try:
                return score_continuations(self.model, ptokens, prefix, continuations,
                                           cache=cache, cached=cut)
            finally:
                crop_cache(cache, cut)


class CachedScorer:
    """Scores continuations of a prompt, reusing what is cached: the per-edit prefix cache
    (`EditableLM(prefix_cache=N)`) for everything before the question, else the always-on cache
    of the edit-independent head (BOS or chat head, the m P-Token begin markers), else nothing.
    All three run the same packed forward (`scoring.packed_logprobs`) and give the same scores."""

    def __init__(self, model: Any, prefix_cache: PrefixCache | None = None,
                 head_entries: int = 4) -> None:
        self.model = model
        self.prefix_cache = prefix_cache
        self.head_cache = PrefixCache(model, head_entries)

    def continuations(self, ids: Sequence[int], ptokens: PTokens | None,
                      continuations: Sequence[Sequence[int]], *, prefix_len: int = 0,
                      head_len: int = 0) -> list[list[float]]:
        """Per-token log-probabilities of each continuation after `ids`; `prefix_len` and
        `head_len` as in `layouts.Prompt`."""
        if self.prefix_cache is not None and prefix_len:
            return self.prefix_cache.continuations(ids, prefix_len, ptokens, continuations)
        if head_len > 1:  # a lone BOS is not worth a cache lookup
            return self.head_cache.continuations(ids, head_len, ptokens, continuations)
        return score_continuations(self.model, ptokens, ids, continuations)
