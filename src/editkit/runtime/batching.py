"""Generations requested from several threads, decoded together as they come (continuous batching).

LangChain's `batch` runs one `invoke` per input in a thread pool, and a server answers each
request in its own thread: each caller asks for one answer. `MicroBatcher.generate` lets them keep
that call path. All requests share one running `DecodeBatch`: a request that arrives while it is
decoding joins it before the next step (prefilled, then decoded alongside the others), and a
finished one leaves it at once, so nobody waits for a batch they missed to end. Each caller gets
its own `Generation`, the one it would get alone (greedy, or sampled with its own seed).

There is no background thread: the caller that finds nobody decoding becomes the driver and
runs steps until its own answer is done; then the next waiting caller takes over the same batch.
"""
from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ..ptokens import PTokens
from .decode_batch import DecodeBatch
from .generation import Generation, RunResults, TextGenerator

__all__ = ["BatchedStream", "MicroBatcher"]


class MicroBatcher:
    """One running batch for one `TextGenerator`, fed by concurrent callers.

    window_s: how long the first request of an idle batcher waits for others, so that requests
    that arrive together are prefilled together (one forward for all their prompts).
    max_gather_s: how long it waits, at most, for requests announced as on their way
    (`arriving`), which a server's requests are while their edits are retrieved.
    max_batch: rows decoded at once; later requests wait for a row to free up.
    """

    def __init__(self, generator: TextGenerator, *, window_s: float = 0.02,
                 max_gather_s: float = 0.25, max_batch: int = 16) -> None:
        self.generator, self.window_s, self.max_batch = generator, window_s, max_batch
        self.max_gather_s = max_gather_s
        self._cond = threading.Condition()
        self._arriving = 0  # requests announced by `arriving` and not queued yet
        self._announced = threading.local()  # per thread: its `arriving` blocks (stack)
        # waiting requests: the generator's `batch_row`s (`left`, `result`, `failure`; their
        # request holds the P-Token set)
        self._pending: list[Any] = []
        self._busy = False
        self._batch: DecodeBatch | None = None
        # what benchmarks and tests read: requests seen, batches started from idle, requests
        # that joined a batch already decoding, decode steps, rows summed over the steps (mean
        # rows per step = row_steps / steps), prefill forwards
        self.requests = self.batches = self.joined = self.steps = 0
        self.row_steps = self.prefills = 0

    def generate(self, ids: Sequence[int], *, ptokens: PTokens | None = None,
                 max_new_tokens: int = 32, stop: Sequence[str] | None = (),
                 temperature: float | None = None, seed: int | None = None,
                 prefix_len: int = 0, cache_salt: str | None = None) -> Generation:
        """The `Generation` for `ids` (greedy unless `temperature > 0`), decoded in the running
        batch with every other caller's (blocks until it is done). prefix_len / cache_salt:
        the leading ids that later requests with the same salt may start from
        (`prefix_store.PrefixStore`)."""
        run = self._enqueue(ids, ptokens, max_new_tokens, stop, temperature, seed, prefix_len,
                            cache_salt)
        while not run.left.is_set():
            self._advance(run)
        if run.failure is not None:
            raise run.failure
        return run.result

    def stream(self, ids: Sequence[int], *, ptokens: PTokens | None = None,
               max_new_tokens: int = 32, stop: Sequence[str] | None = (),
               temperature: float | None = None, seed: int | None = None,
               prefix_len: int = 0, cache_salt: str | None = None) -> BatchedStream:
        """`generate`, streamed: text pieces as the running batch produces them (the pieces
        concatenate to `generate`'s text). The consumer drives the batch a step at a time
        whenever nobody else does; closing the stream cancels its row at the next step."""
        return BatchedStream(self, self._enqueue(ids, ptokens, max_new_tokens, stop,
                                                 temperature, seed, prefix_len, cache_salt))

    @contextmanager
    def arriving(self) -> Iterator[None]:
        """Announce that this thread is preparing a request (retrieving its edits, building its
        prompt) and will `generate` / `stream` it within the block. An idle batcher waits for
        announced requests (up to `max_gather_s`) before it starts a batch, so that requests
        sent together are prefilled together even when their preparation takes longer than
        `window_s`; a batch that is already decoding never waits, they join it at the next
        step. The announcement ends when the thread's next request is queued, or with the
        block."""
        mine = [False]  # queued yet?
        stack = self._announced.__dict__.setdefault("stack", [])
        with self._cond:
            self._arriving += 1
        stack.append(mine)
        try:
            yield
        finally:
            stack.remove(mine)
            if not mine[0]:
                self._end_announcement(mine)

    def _end_announcement(self, mine: list[bool]) -> None:
        mine[0] = True
        with self._cond:
            self._arriving -= 1
            self._cond.notify_all()

    def _queued_here(self) -> None:
        """A request of this thread was queued: its innermost open announcement ends."""
        for mine in reversed(self._announced.__dict__.get("stack", ())):
            if not mine[0]:
                self._end_announcement(mine)
                return

    def _enqueue(self, ids: Sequence[int], ptokens: PTokens | None, max_new_tokens: int,
                 stop: Sequence[str] | None, temperature: float | None,
                 seed: int | None, prefix_len: int, cache_salt: str | None) -> Any:
        """Validate a request and queue it (as a `batch_row`) for the next admission."""
        run = self.generator.batch_row(ids, ptokens=ptokens, max_new_tokens=max_new_tokens,
                                       stop=stop, temperature=temperature, seed=seed,
                                       prefix_len=prefix_len, cache_salt=cache_salt)
        with self._cond:
            self._pending.append(run)
            self.requests += 1
            self._cond.notify_all()
        self._queued_here()
        return run

    def _advance(self, run: Any, steps: int | None = None) -> None:
        """Drive the batch (until `run` is done, or for `steps` steps) if nobody else is
        driving; otherwise wait a little for the driver."""
        with self._cond:
            if self._busy:  # another caller is driving: it decodes our row too
                if not run.left.is_set():  # (the driver notifies after every step)
                    self._cond.wait(timeout=0.05)
                return
            self._busy = True
        try:
            self._drive(until=run, steps=steps)
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()

    def _withdraw(self, run: Any) -> bool:
        """Take a request that has not been admitted yet out of the queue (True if it was)."""
        with self._cond:
            if run in self._pending:
                self._pending.remove(run)
                return True
            return False

    def _drive(self, until: Any, steps: int | None = None) -> None:
        """Decode steps, admitting waiting requests before each, until `until` is done (or
        `steps` steps were taken)."""
        if self._batch is None or not len(self._batch):
            self._gather()
        taken = 0
        while not until.left.is_set() and (steps is None or taken < steps):
            taken += 1
            self._admit()
            if self._batch is None or not len(self._batch):
                continue  # everything admitted finished at its first token (`until` too)
            self.row_steps += len(self._batch)
            try:
                self._batch.step()
            except Exception:  # noqa: BLE001 - every row of the batch got the error (leave)
                self._batch = None
            self.steps += 1
            with self._cond:  # callers whose row finished, or whose stream got a piece, go on
                self._cond.notify_all()

    def _gather(self) -> None:
        """Idle: let requests that arrive together start together. Waits `window_s`, and
        longer (up to `max_gather_s`) while announced requests are still on their way."""
        start = time.monotonic()
        with self._cond:
            while True:
                waited = time.monotonic() - start
                if waited >= self.max_gather_s or (not self._arriving and waited >= self.window_s):
                    return
                self._cond.wait((self.max_gather_s if self._arriving else self.window_s) - waited)

    def _admit(self) -> None:
        """Move waiting requests into the batch: up to `max_batch` rows, and only requests with
        the batch's P-Token set (another set waits until the batch is empty)."""
        with self._cond:
            if self._batch is None or not len(self._batch):
                if not self._pending:
                    return
                self._batch = self.generator.new_batch(self._pending[0].request.ptokens)
                self.batches += 1
                starting = True
            else:
                starting = False
            room = self.max_batch - len(self._batch)
            new = [r for r in self._pending
                   if r.request.ptokens is self._batch.ptokens][:max(room, 0)]
            for p in new:
                self._pending.remove(p)
            if not starting:
                self.joined += len(new)
        if not new:
            return
        self.prefills += 1
        try:
            self._batch.add(new)
        except Exception:  # noqa: BLE001 - the new rows left with the error; the batch runs on
            pass


class BatchedStream(RunResults):
    """Text pieces of one row of a `MicroBatcher`'s running batch (`MicroBatcher.stream`).

    Iterate it for the pieces; `text`, `completion_tokens`, `finish_reason` and `token_ids`
    are final once it is exhausted (the surface of `GenerationStream`). `close()`, leaving a
    `for` loop early or the `with` block ends the row at the next step.
    """

    def __init__(self, batcher: MicroBatcher, run: Any) -> None:
        self._batcher, self._run = batcher, run
        self._done = False

    def __iter__(self) -> Iterator[str]:
        try:
            while True:
                try:
                    yield self._run.out.get_nowait()
                    continue
                except queue.Empty:
                    pass
                if self._run.left.is_set():  # finished: the tail is queued before `left`
                    if not self._run.out.empty():
                        continue
                    self._done = True
                    if self._run.failure is not None:
                        raise self._run.failure
                    return
                self._batcher._advance(self._run, steps=1)
        finally:
            if not self._done:
                self.close()

    def close(self) -> None:
        """Cancel the row (if still running) and wait until it has left the batch."""
        if self._done:
            return
        self._done = True
        self._run.cancel.set()
        if self._batcher._withdraw(self._run):
            return
        while not self._run.left.is_set():
            self._batcher._advance(self._run, steps=1)

    def __enter__(self) -> BatchedStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

