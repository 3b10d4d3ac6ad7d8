"""The keys and values of prompt starts that `DecodeBatch` rows are prefilled from.

Prefill is compute-bound on a CPU, and the prompts a server sees repeat their starts (the
layout's head, and an edit's prefix across questions about it), so the batched decode loop keeps
them here instead of recomputing them. Its own module because the store is a cache with its own
rules (one P-Token set at a time, per-namespace entries, a byte budget, LRU eviction) that
`DecodeBatch` only reads and fills. Callers: `DecodeBatch` (`runtime.decode_batch`), and
`TextGenerator`, which owns one store shared by all its batches (`runtime.generation`).
"""
from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import InvalidInputError
from ..ptokens import PTokens

__all__ = ["DEFAULT_PREFIX_BYTES", "Prefix", "PrefixStore"]


@dataclass(eq=False)
class Prefix:
    """The keys and values of a prompt's first `len(ids)` ids, one row (`compat.row_kv`)."""

    ids: tuple[int, ...]
    kv: list[tuple[torch.Tensor, torch.Tensor]]

    @property
    def nbytes(self) -> int:
        return sum(k.numel() * k.element_size() + v.numel() * v.element_size()
                   for k, v in self.kv)


DEFAULT_PREFIX_BYTES = 64 << 20
"""What a generator's `PrefixStore` may hold: about 40 P-Token edit prefixes of SmolLM2-135M
(~1.6 MB each: 30 layers x keys and values x 3 heads x 64 dims x ~34 positions, float32)."""


class PrefixStore:
    """Prompt starts whose keys and values `DecodeBatch` rows are prefilled from.

    Prefill is compute-bound on a CPU: every prompt token costs the same, batched or not, and
    the prompts a server sees repeat their starts. Two kinds are kept:
    - the **head**: the ids that every prompt of the layout opens with (BOS, a chat template's
      system turn, the m P-Token begin markers), computed once from the first batch whose rows
      share enough of it (`DecodeBatch.MIN_SHARED_TOKENS`); it holds no user text;
    - **prefixes**: everything before a row's question (`prefix_len`: the edit and its markers),
      copied out of the batch's cache after the row's prefill, so that the next question about
      the same edit is fed only its own ids. They are kept per `cache_salt` (the namespace), so
      one tenant's rows never start from, or time, another tenant's entries, and evicted least
      recently used beyond `max_bytes` (0: keep no prefixes, only the head).

    Everything here was computed with one P-Token set's rows: a store is for one set at a time
    (a weak reference to it, and the version counter of its rows, which in-place training
    bumps). Another set, or changed rows, starts it afresh.
    """

    def __init__(self, max_bytes: int = DEFAULT_PREFIX_BYTES) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            raise InvalidInputError(f"The prefix store's size must be an int ≥ 0 (bytes), not "
                                    f"{max_bytes!r}.")
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._owner: tuple[Any, int] | None = None
        self._head: Prefix | None = None
        self._entries: OrderedDict[tuple[str | None, tuple[int, ...]], Prefix] = OrderedDict()
        self.bytes = 0
        self.hits = self.misses = 0  # prefix lookups (benchmarks and tests read them)

    @staticmethod
    def _key(ptokens: PTokens | None) -> tuple[Any, int]:
        if ptokens is None:
            return None, -1
        return weakref.ref(ptokens), int(ptokens.layer.weight._version)

    def _owned_by(self, ptokens: PTokens | None) -> bool:
        if self._owner is None:
            return False
        ref, version = self._owner
        same = ref is None if ptokens is None else (ref is not None and ref() is ptokens)
        return same and version == self._key(ptokens)[1]

    def _own(self, ptokens: PTokens | None) -> None:
        """Make the store `ptokens`'s (dropping what another set, or older rows, computed)."""
        if not self._owned_by(ptokens):
            self._owner, self._head = self._key(ptokens), None
            self._entries.clear()
            self.bytes = 0

    def head(self, ptokens: PTokens | None) -> Prefix | None:
        with self._lock:
            return self._head if self._owned_by(ptokens) else None

    def set_head(self, ptokens: PTokens | None, head: Prefix) -> None:
        with self._lock:
            self._own(ptokens)
            self._head = head

    def get(self, ptokens: PTokens | None, salt: str | None, ids: Sequence[int]) -> Prefix | None:
        """The stored prefix that is exactly `ids`, for this salt (None: not stored)."""
        with self._lock:
            hit = self._entries.get((salt, tuple(ids))) if self._owned_by(ptokens) else None
            if hit is None:
                self.misses += 1
                return None
            self.hits += 1
            self._entries.move_to_end((salt, hit.ids))
            return hit

    def put(self, ptokens: PTokens | None, salt: str | None, prefix: Prefix) -> None:
        """Keep `prefix` for this salt, evicting the least recently used beyond `max_bytes`."""
        size = prefix.nbytes
        if size > self.max_bytes:
            return
        with self._lock:
            self._own(ptokens)
            old = self._entries.pop((salt, prefix.ids), None)
            if old is not None:
                self.bytes -= old.nbytes
            self._entries[(salt, prefix.ids)] = prefix
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, dropped = self._entries.popitem(last=False)
                self.bytes -= dropped.nbytes

    def clear(self) -> None:
        """Forget every prefix and the head."""
        with self._lock:
            self._owner, self._head = None, None
            self._entries.clear()
            self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)
