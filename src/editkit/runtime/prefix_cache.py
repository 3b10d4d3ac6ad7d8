"""Reuse the key/value cache of a prompt's shared prefix across questions about one edit.

An IKE prompt is ~1,000 tokens of demonstrations and the fact before a ~10-token question; asking
several questions about one edit recomputes that prefix every time. `PrefixCache` keeps the KV
cache of the last few prefixes (LRU), and `greedy` / `logprobs` feed only what follows it. Each
call crops the cache back to the prefix afterwards, so entries stay reusable; a lock per cache
serialises the calls that share it.
"""
from __future__ import annotations

import inspect
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch

from .scoring import ScoreItem, _device, _pack, input_embeds
from ..ptokens import PTokens


def _cache_kw(model: Any) -> str:
    """The forward argument for a KV cache: `cache` (transformers ≥ 5.2x) or `past_key_values`."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else \
        "past_key_values"


def _crop(cache: Any, keep: int) -> None:
    """Drop everything after the first `keep` positions (a negative crop removes that many)."""
    extra = cache.get_seq_length() - keep
    if extra > 0:
        cache.crop(-extra)


@torch.no_grad()
def greedy_steps(model: Any, cache: Any, ptokens: PTokens | None, feed: Sequence[int], *,
                 max_new_tokens: int, eos_ids: Sequence[int]) -> list[int]:
    """Greedy tokens after `feed`, which extends what `cache` already holds (the cache grows)."""
    kw = _cache_kw(model)
    dev = _device(model)
    out: list[int] = []
    feed = list(feed)
    for _ in range(max_new_tokens):
        x = torch.tensor([feed], device=dev)
        logits = model(inputs_embeds=input_embeds(model, ptokens, x), **{kw: cache},
                       use_cache=True, logits_to_keep=1).logits[0, -1]
        out.append(int(logits.argmax()))
        if out[-1] in eos_ids:
            break
        feed = [out[-1]]
    return out


class PrefixCache:
    """LRU of prefix KV caches for one model (and P-Token set), `max_entries` prefixes deep."""

    def __init__(self, model: Any, ptokens: PTokens | None, max_entries: int = 4) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be ≥ 1")
        self.model, self.ptokens, self.max_entries = model, ptokens, max_entries
        self._entries: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        self._lock = threading.RLock()
        self.hits = self.misses = 0
        self._kw = _cache_kw(model)

    @torch.no_grad()
    def _get(self, prefix: Sequence[int], ptokens: PTokens | None) -> Any:
        """The cache holding `prefix` (computed on a miss). Caller holds the lock."""
        from transformers import DynamicCache

        key = (id(ptokens), *prefix)
        hit = self._entries.get(key)
        if hit is not None:
            self.hits += 1
            self._entries.move_to_end(key)
            return hit
        self.misses += 1
        cache = DynamicCache(config=self.model.config)
        ids = torch.tensor([list(prefix)], device=_device(self.model))
        self.model(inputs_embeds=input_embeds(self.model, ptokens, ids), **{self._kw: cache},
                   use_cache=True, logits_to_keep=1)
        self._entries[key] = cache
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return cache

    @torch.no_grad()
    def greedy(self, ids: Sequence[int], prefix_len: int, ptokens: PTokens | None, *,
               max_new_tokens: int, eos_ids: Sequence[int]) -> list[int]:
        """Greedy continuation of `ids`, whose first `prefix_len` tokens come from the cache."""
        # At least one token is always fed: the last position's logits are not cached.
        cut = min(prefix_len, len(ids) - 1)
        with self._lock:
            cache = self._get(ids[:cut], ptokens)
            try:
                return greedy_steps(self.model, cache, ptokens, ids[cut:],
                                    max_new_tokens=max_new_tokens, eos_ids=eos_ids)
            finally:
                _crop(cache, cut)

    @torch.no_grad()
    def continuations(self, prefix: Sequence[int], prefix_len: int, ptokens: PTokens | None,
                      continuations: Sequence[Sequence[int]]) -> list[list[float]]:
        """`inference.score_continuations` with the first `prefix_len` tokens from the cache."""
        ids, pos, mask, where = _pack(prefix, [ScoreItem(question=[],
                                                         targets=[list(c) for c in continuations])])
        cut = min(prefix_len, len(prefix) - 1)  # the prefix's last token predicts the targets
        dev = _device(self.model)
        keep = sorted({i for first, own in where[0] for i in (first, *own)})
        row = {p: r for r, p in enumerate(keep)}
        with self._lock:
            cache = self._get(prefix[:cut], ptokens)
            try:
                x = torch.tensor([ids[cut:]], device=dev)
                logits = self.model(
                    inputs_embeds=input_embeds(self.model, ptokens, x),
                    attention_mask=mask[cut:][None, None].to(dev),
                    position_ids=torch.tensor([pos[cut:]], device=dev),
                    **{self._kw: cache}, use_cache=True,
                    logits_to_keep=torch.tensor([k - cut for k in keep], device=dev)).logits[0]
            finally:
                _crop(cache, cut)
        result = []
        for (first, own), cont in zip(where[0], continuations):
            logp = torch.log_softmax(logits[[row[first], *(row[i] for i in own)]].float(), -1)
            tgt = torch.tensor(list(cont), device=logp.device)
            result.append(logp.gather(1, tgt[:, None])[:, 0].tolist())
        return result
