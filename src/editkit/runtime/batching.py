"""Greedy generations requested from several threads at about the same time, decoded together.

LangChain's `batch` runs one `invoke` per input in a thread pool, and a server answers each
request in its own task: each caller asks for one answer. `MicroBatcher.generate` lets them keep
that call path. A request waits up to `window_s` for others to arrive, then the requests that
share a budget and stop sequences are decoded as one batch (`TextGenerator.generate_many`); each
caller gets its own `Generation`, the same one it would get alone.

There is no background thread: the first caller that finds nobody decoding becomes the decoder
for one batch, then everyone whose request is done returns and the others try again.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidInputError
from ..ptokens import PTokens
from .generation import Generation, TextGenerator

__all__ = ["MicroBatcher"]


@dataclass(eq=False)
class _Pending:
    ids: tuple[int, ...]
    ptokens: PTokens | None
    max_new_tokens: int
    stop: tuple[str, ...]
    done: threading.Event = field(default_factory=threading.Event)
    result: Generation | None = None
    error: BaseException | None = None

    @property
    def key(self) -> tuple[Any, ...]:
        """Requests with equal keys can share a batch (one budget, one stop list, one P-Token
        set: rows without P-Token ids are unaffected by it, but two different sets cannot mix)."""
        return (self.max_new_tokens, self.stop, None if self.ptokens is None else id(self.ptokens))


class MicroBatcher:
    """Collects concurrent greedy requests for one `TextGenerator` into batches."""

    def __init__(self, generator: TextGenerator, *, window_s: float = 0.02,
                 max_batch: int = 16) -> None:
        self.generator, self.window_s, self.max_batch = generator, window_s, max_batch
        self._cond = threading.Condition()
        self._pending: list[_Pending] = []
        self._busy = False
        self.requests = 0  # requests seen and batches decoded (benchmarks and tests read them)
        self.batches = 0

    def generate(self, ids: Sequence[int], *, ptokens: PTokens | None = None,
                 max_new_tokens: int = 32, stop: Sequence[str] | None = ()) -> Generation:
        """The greedy `Generation` for `ids`, decoded in a batch with whatever arrives within
        the window (blocks until it is done)."""
        if isinstance(stop, str):
            raise InvalidInputError("stop must be a list of strings.")
        item = _Pending(ids=tuple(int(i) for i in ids), ptokens=ptokens,
                        max_new_tokens=max_new_tokens, stop=tuple(stop or ()))
        with self._cond:
            self._pending.append(item)
            self.requests += 1
            self._cond.notify_all()
        while not item.done.is_set():
            with self._cond:
                if self._busy:  # someone is decoding: wait for that batch to end
                    self._cond.wait(timeout=0.05)
                    continue
                self._busy = True
            try:
                self._decode_one_batch()
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
        if item.error is not None:
            raise item.error
        assert item.result is not None
        return item.result

    def _decode_one_batch(self) -> None:
        time.sleep(self.window_s)  # let the requests that arrive together join
        with self._cond:
            if not self._pending:
                return
            key = self._pending[0].key
            batch = [p for p in self._pending if p.key == key][: self.max_batch]
            for p in batch:
                self._pending.remove(p)
            self.batches += 1
        try:
            gens = self.generator.generate_many([p.ids for p in batch], ptokens=batch[0].ptokens,
                                                max_new_tokens=batch[0].max_new_tokens,
                                                stop=list(batch[0].stop),
                                                batch_size=len(batch))
            for p, g in zip(batch, gens, strict=True):
                p.result = g
        except BaseException as exc:  # noqa: BLE001 - every caller of the batch re-raises it
            for p in batch:
                p.error = exc
        finally:
            for p in batch:
                p.done.set()
