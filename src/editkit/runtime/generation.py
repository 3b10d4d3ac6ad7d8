"""The one generate / stream: stop sequences, cancellation, a finish reason, greedy or sampled.

`EditableLM.ask` / `stream`, the LangChain chat model, evaluation and the benchmarks all generate
through `TextGenerator`. How tokens are computed is a `Decoder`, chosen once per model by
`decoder_for`, not by the callers:

- `BatchDecoder`: a batch of one through `DecodeBatch`, the decode loop that `generate_many`
  and the server's `MicroBatcher` run for many sequences at once (P-Token rows looked up by
  `scoring.input_embeds`), greedy or sampled (`Sampler`, seeded per request); always available,
  and the fallback of the others, so a request gets the same tokens alone or in a batch;
- `PrefixCacheDecoder`: greedy, with the KV cache of the prompt's prefix (demonstrations + fact)
  reused across questions (`EditableLM(prefix_cache=N)`);
- `MixedPrecisionDecoder`: greedy, fp32 prefill then a bf16/fp16 copy of the weights
  (`EditableLM(decode_dtype="bfloat16")`).

The two greedy variants cannot sample: a sampled request (`temperature > 0`) falls back to
`BatchDecoder` on the full-precision model, without the prefix cache. A prompt without a cacheable
prefix falls through the prefix-cache variant the same way.

Every decoder runs in a worker thread and hands each new token to one `emit` callback, which
detokenizes incrementally, cuts the text at the first stop sequence, strips surrounding
whitespace and queues the text for the consumer. `emit` answers whether to go on, so stop
sequences, EOS, `max_new_tokens` and cancellation end every variant at its next step. Streamed
pieces concatenate to exactly what `generate` returns: `generate` is the stream run to its end.
"""
from __future__ import annotations

import queue
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch

from ..compat import (
    decode_cache,
    drop_cache_front,
    forward_last_logits,
    join_caches,
    model_device,
    row_kv,
    sliding_window,
    stack_kv,
)
from ..compat import eos_ids as model_eos_ids
from ..errors import InvalidInputError
from ..ptokens import PTokens
from .mixed_decode import greedy_mixed
from .prefix_cache import Emit, PrefixCache
from .scoring import input_embeds

__all__ = ["DEFAULT_PREFIX_BYTES", "BatchDecoder", "DecodeBatch", "DecodeRequest", "Decoder",
           "Emit", "FinishReason", "Generation", "GenerationStream", "MixedPrecisionDecoder",
           "PrefixCacheDecoder", "Prefix", "PrefixStore", "RunResults", "Sampler",
           "TextAssembler", "TextGenerator", "check_generation_args", "decoder_for"]

FinishReason = Literal["stop", "length"]
MAX_NEW_TOKENS = 4096


def check_generation_args(max_new_tokens: Any, temperature: Any = None, *,
                          name: str = "max_new_tokens") -> None:
    """InvalidInputError unless `max_new_tokens` is an int in [1, 4096] and `temperature` is
    None or a number ≥ 0 (None or 0: greedy)."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) \
            or not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
        raise InvalidInputError(f"{name} must be an int between 1 and {MAX_NEW_TOKENS}.")
    if temperature is not None and (isinstance(temperature, bool)
                                    or not isinstance(temperature, (int, float))
                                    or not temperature >= 0):
        raise InvalidInputError("temperature must be None or a number ≥ 0.")


def _check_stop(stop: Any) -> list[str]:
    if stop is None:
        return []
    if isinstance(stop, str) or not isinstance(stop, Sequence) \
            or not all(isinstance(s, str) for s in stop):
        raise InvalidInputError("stop must be a list of strings.")
    return [s for s in stop if s]


@dataclass(frozen=True)
class DecodeRequest:
    """What to continue and how: prompt ids, the P-Tokens they may hold, the budget, sampling."""

    ids: tuple[int, ...]
    ptokens: PTokens | None
    max_new_tokens: int
    temperature: float | None = None  # None or 0: greedy
    prefix_len: int = 0  # leading tokens a prefix cache may reuse (0: none)
    seed: int | None = None  # sampled requests: the seed of their own generator (None: drawn)
    # who may reuse the keys and values of this prompt's prefix (`PrefixStore`): requests with
    # the same salt (the server and the SDK use the namespace whose edits built the prompt)
    cache_salt: str | None = None

    @property
    def greedy(self) -> bool:
        return not self.temperature


class Decoder(Protocol):
    """Computes new tokens for a request and hands each to `emit` until it returns False or
    `max_new_tokens` are out (runs in the generation's worker thread)."""

    def decode(self, request: DecodeRequest, emit: Emit) -> None: ...


@dataclass
class Sampler:
    """Picks a sampled token from one row's logits: temperature, then top-k, then top-p (the
    order and defaults of `model.generate`'s sampling: the model's generation config, else
    top-k 50, top-p 1), from its own seeded generator. A request's tokens therefore depend on
    its seed, not on which other requests share its batch."""

    temperature: float
    top_k: int | None
    top_p: float | None
    generator: torch.Generator

    @classmethod
    def for_request(cls, model: Any, request: DecodeRequest) -> Sampler | None:
        """None for a greedy request; a seed of None draws one from torch's global generator
        (so `torch.manual_seed` still makes a run repeatable)."""
        if request.greedy:
            return None
        cfg = getattr(model, "generation_config", None)
        top_k = getattr(cfg, "top_k", 50)
        top_p = getattr(cfg, "top_p", 1.0)
        seed = request.seed if request.seed is not None else int(torch.randint(2**62, ()))
        gen = torch.Generator(device=model_device(model))
        gen.manual_seed(int(seed))
        return cls(float(request.temperature or 1.0), int(top_k) if top_k else None,
                   float(top_p) if top_p is not None and top_p < 1.0 else None, gen)

    def choose(self, logits: torch.Tensor) -> int:
        scores = logits.float() / self.temperature
        if self.top_k is not None and self.top_k < scores.shape[-1]:
            kth = torch.topk(scores, self.top_k).values[-1]
            scores = scores.masked_fill(scores < kth, float("-inf"))
        if self.top_p is not None:  # keep the smallest set of tokens whose mass reaches top_p
            sorted_scores, order = torch.sort(scores, descending=False)
            tail = sorted_scores.softmax(-1).cumsum(-1) <= 1 - self.top_p
            tail[-1:] = False  # always keep the most likely token
            scores = scores.masked_fill(tail.scatter(0, order, tail), float("-inf"))
        probs = scores.softmax(-1)
        return int(torch.multinomial(probs, 1, generator=self.generator))


class _Row(Protocol):
    """What `DecodeBatch` needs from one sequence."""

    ids: tuple[int, ...]
    sampler: Sampler | None
    prefix_len: int  # leading ids worth keeping for later rows (0: none); see `PrefixStore`
    cache_salt: str | None  # who may reuse that prefix

    def emit(self, token: int) -> bool: ...  # False: the sequence is done

    def leave(self, error: BaseException | None = None) -> None: ...  # it left the batch


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


class DecodeBatch:
    """Sequences decoded together, one token per step for every row (continuous batching).

    `add` prefills new sequences (left-padded, in one forward), hands each its first token and
    puts the ones that go on into the running batch, which may be decoding already: both KV
    caches are left-padded to the longer one and stacked (`compat.join_caches`). `step` feeds
    every row its last token. A row whose `emit` returns False leaves at once (its cache rows
    dropped, and columns that are padding for every remaining row trimmed), so the batch only
    ever computes for sequences still running.

    The 2D attention mask hides the padding and positions count from each row's first real
    token, so a row computes what it computes alone, up to float rounding. On a CPU decoding
    is memory-bound (every weight is read once per step): that read is shared by all rows.

    Prefill is compute-bound instead: every prompt token costs the same batched or not. So rows
    start from stored keys and values where they can (`PrefixStore`, shared by the batches of
    one `TextGenerator`): the row's own prefix (its edit, from an earlier question about it),
    else as much of the layout's head as it starts with. The first `add` of enough rows that
    share a head computes the head once (one row); after every prefill, each row's prefix is
    copied into the store. A row prefilled from a stored start of n ids has that start as its
    first n cache columns, then padding, then its own ids (the mask hides the padding and
    positions are explicit, so this equals a left-padded row). Not for sliding-window models,
    whose windowed layers count key columns, not positions. A lone request (`BatchDecoder`) gets
    an empty store of its own, so it is always prefilled whole and its answer never depends on
    what ran before it.
    """

    #: a head is computed when (rows sharing it - 1) x its length reaches this many tokens: below
    #: that, the head's own forward costs more than the prefill it saves
    MIN_SHARED_TOKENS = 16
    #: what one more forward costs, in prompt tokens fed: a forward of SmolLM2-135M on this CPU
    #: takes about 40 ms + 1.1 ms per token fed (rows x width), so ~36 tokens (`_groups`)
    FORWARD_TOKENS = 36

    def __init__(self, model: Any, ptokens: PTokens | None, *, pad_id: int,
                 prefixes: PrefixStore | None = None) -> None:
        self.model, self.ptokens, self.pad_id = model, ptokens, pad_id
        self.prefixes = prefixes if prefixes is not None else PrefixStore(0)
        self.dev = model_device(model)
        self.rows: list[_Row] = []
        self.cache: Any = None
        self.mask = self.pos = self.last = torch.empty(0)  # (rows, columns), (rows, 1), (rows,)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def head(self) -> Prefix | None:
        """The leading ids that this batch's prompts share, with their keys and values (maybe
        computed by an earlier batch of the same generator; None once the P-Token rows
        changed)."""
        return self.prefixes.head(self.ptokens)

    @torch.no_grad()
    def add(self, rows: Sequence[_Row]) -> None:
        """Prefill `rows` and hand each its first token; the ones that go on join the batch.

        Rows are prefilled in a few forwards of similar lengths (`_groups`), not one: a
        left-padded forward computes every row at the longest row's width, and with stored
        prefixes what is left to feed ranges from a 5-token question to a 35-token paraphrase."""
        if not rows:
            return
        try:
            starts = self._starts(rows)  # per row: leading ids whose keys and values are stored
        except BaseException as exc:
            for r in rows:
                r.leave(exc)
            raise
        fed = [len(r.ids) - n for r, (_, n) in zip(rows, starts, strict=True)]
        groups = _groups(fed, self.FORWARD_TOKENS)
        for g, group in enumerate(groups):
            try:
                self._prefill([rows[i] for i in group], [starts[i] for i in group])
            except BaseException as exc:
                for i in (i for later in groups[g + 1:] for i in later):
                    rows[i].leave(exc)
                raise

    @torch.no_grad()
    def _prefill(self, rows: list[_Row], starts: list[tuple[Prefix | None, int]]) -> None:
        """One left-padded forward for `rows`, each fed from its stored start."""
        try:
            front = max(n for _, n in starts)
            fed = [len(r.ids) - n for r, (_, n) in zip(rows, starts, strict=True)]
            width = max(fed)
            ids = torch.tensor([[self.pad_id] * (width - f) + list(r.ids[n:])
                                for r, (_, n), f in zip(rows, starts, fed, strict=True)],
                               device=self.dev)
            mask = torch.tensor([[1] * n + [0] * (front - n + width - f) + [1] * f
                                 for (_, n), f in zip(starts, fed, strict=True)], device=self.dev)
            pos = (mask.cumsum(-1) - 1).clamp(min=0)[:, front:]
            cache = stack_kv(self.model, [(p.kv if p else None, n) for p, n in starts], front) \
                if front else decode_cache(self.model)
            logits = forward_last_logits(self.model, input_embeds(self.model, self.ptokens, ids),
                                         mask, pos, cache)
            tokens = self._choose(rows, logits)
        except BaseException as exc:
            for r in rows:
                r.leave(exc)
            raise
        self._keep_prefixes(rows, starts, cache, front + width)
        keep = self._emit(rows, tokens)
        if not keep:
            return
        if len(keep) < len(rows):
            cache.batch_select_indices(torch.tensor(keep, device=self.dev))
        rows, mask, pos, tokens = _select(rows, keep, mask, pos[:, -1:], tokens)
        mask = _trim_front(mask, cache)
        if not self.rows:
            self.rows, self.cache, self.mask, self.pos, self.last = rows, cache, mask, pos, tokens
            return
        join_caches(self.cache, cache)
        width = max(self.mask.shape[1], mask.shape[1])
        self.mask = torch.cat([_pad_front(self.mask, width), _pad_front(mask, width)])
        self.pos = torch.cat([self.pos, pos])
        self.last = torch.cat([self.last, tokens])
        self.rows = self.rows + rows

    def _starts(self, rows: Sequence[_Row]) -> list[tuple[Prefix | None, int]]:
        """Per row: the stored start it is prefilled from and how many of its ids that covers
        (None, 0: prefill it whole). Every row keeps at least one id of its own (its last
        position gives its first token).

        A row's own prefix comes first; else as much of the head as the row starts with. The
        first add of rows that share enough leading ids computes the head."""
        if sliding_window(self.model) is not None:
            return [(None, 0)] * len(rows)
        head = self.head
        if head is None:
            first = rows[0].ids
            n = min(_common_start(first, r.ids) for r in rows[1:]) if len(rows) > 1 else 0
            if (len(rows) - 1) * n >= self.MIN_SHARED_TOKENS:
                cache = decode_cache(self.model)
                ids = torch.tensor([first[:n]], device=self.dev)
                forward_last_logits(self.model, input_embeds(self.model, self.ptokens, ids),
                                    torch.ones_like(ids), torch.arange(n, device=self.dev)[None],
                                    cache)
                head = Prefix(tuple(first[:n]), row_kv(cache, 0, [(0, n)]))
                self.prefixes.set_head(self.ptokens, head)
        out: list[tuple[Prefix | None, int]] = []
        for r in rows:
            own = self.prefixes.get(self.ptokens, r.cache_salt, r.ids[:r.prefix_len]) \
                if self.prefixes.max_bytes and 0 < r.prefix_len < len(r.ids) else None
            if own is not None:
                out.append((own, r.prefix_len))
                continue
            n = _common_start(head.ids, r.ids) if head is not None else 0
            out.append((head if n else None, n))
        return out

    def _keep_prefixes(self, rows: Sequence[_Row], starts: Sequence[tuple[Prefix | None, int]],
                       cache: Any, columns: int) -> None:
        """Copy each row's prefix (`prefix_len` ids) out of the prefilled cache into the store,
        unless it was fed from it: its first n columns, then its own ids up to the prefix's end
        (they sit at the right end of the `columns`, after the padding)."""
        if not self.prefixes.max_bytes or sliding_window(self.model) is not None:
            return
        for b, (r, (_, n)) in enumerate(zip(rows, starts, strict=True)):
            p = r.prefix_len
            if not n < p < len(r.ids):
                continue
            own = columns - len(r.ids)  # column of id 0 had the row been fed whole
            self.prefixes.put(self.ptokens, r.cache_salt,
                              Prefix(tuple(r.ids[:p]), row_kv(cache, b, [(0, n),
                                                                         (own + n, own + p)])))

    @torch.no_grad()
    def step(self) -> None:
        """One new token for every row."""
        if not self.rows:
            return
        mask = torch.cat([self.mask, self.mask.new_ones((len(self.rows), 1))], dim=1)
        pos = self.pos + 1
        try:
            logits = forward_last_logits(
                self.model, input_embeds(self.model, self.ptokens, self.last[:, None]), mask,
                pos, self.cache)
            tokens = self._choose(self.rows, logits)
        except BaseException as exc:
            self.fail(exc)
            raise
        self.mask, self.pos, self.last = mask, pos, tokens
        keep = self._emit(self.rows, tokens)
        if len(keep) < len(self.rows):
            self._keep(keep)

    def fail(self, exc: BaseException) -> None:
        """Every row leaves with `exc`; the batch is empty afterwards."""
        rows, self.rows, self.cache = self.rows, [], None
        for r in rows:
            r.leave(exc)

    def _choose(self, rows: Sequence[_Row], logits: torch.Tensor) -> torch.Tensor:
        tokens = logits.argmax(-1)
        for b, r in enumerate(rows):
            if r.sampler is not None:
                tokens[b] = r.sampler.choose(logits[b])
        return tokens

    def _emit(self, rows: Sequence[_Row], tokens: torch.Tensor) -> list[int]:
        """Hand each row its token; the indices of the rows that go on (the others left)."""
        keep = []
        for b, (r, t) in enumerate(zip(rows, tokens.tolist(), strict=True)):
            if r.emit(int(t)):
                keep.append(b)
            else:
                r.leave()
        return keep

    def _keep(self, keep: list[int]) -> None:
        if not keep:
            self.rows, self.cache = [], None
            return
        self.rows, self.mask, self.pos, self.last = _select(self.rows, keep, self.mask, self.pos,
                                                            self.last)
        self.cache.batch_select_indices(torch.tensor(keep, device=self.dev))
        self.mask = _trim_front(self.mask, self.cache)


def _groups(fed: Sequence[int], forward_tokens: int) -> list[list[int]]:
    """Split rows that need `fed` ids each into forwards (lists of row indices, shortest first)
    so that the padded work (rows x longest row, per forward) plus `forward_tokens` per forward
    is least: the rows sorted by length, cut where a new forward is cheaper than padding."""
    order = sorted(range(len(fed)), key=lambda i: fed[i])
    # best[k]: least cost of the k shortest rows; cut[k]: where their last forward starts
    best, cut = [0] + [0] * len(order), [0] * (len(order) + 1)
    for k in range(1, len(order) + 1):
        best[k], cut[k] = min((best[j] + forward_tokens + (k - j) * fed[order[k - 1]], j)
                              for j in range(k))
    out, k = [], len(order)
    while k:
        out.append(order[cut[k]:k])
        k = cut[k]
    return out[::-1]


def _common_start(head: Sequence[int], ids: Sequence[int]) -> int:
    """How many leading ids `ids` shares with `head`, leaving `ids` at least one of its own."""
    n = min(len(head), len(ids) - 1)
    return next((i for i in range(n) if head[i] != ids[i]), n)


def _select(rows: list[_Row], keep: list[int], *tensors: torch.Tensor) -> tuple[Any, ...]:
    idx = torch.tensor(keep, device=tensors[0].device)
    return ([rows[b] for b in keep], *(t[idx] for t in tensors))


def _trim_front(mask: torch.Tensor, cache: Any) -> torch.Tensor:
    """Drop the leading columns that are padding for every row (a long prompt left the batch),
    from the mask and the cache alike."""
    drop = int(mask.any(0).int().argmax())
    if drop:
        drop_cache_front(cache, drop)
    return mask[:, drop:]


def pad_id(model: Any, tokenizer: Any) -> int:
    """The id left padding is filled with (masked out, so any id works): the tokenizer's pad,
    else the first EOS, else 0."""
    pad = tokenizer.pad_token_id
    eos = model_eos_ids(model, tokenizer)
    return int(pad if pad is not None else (eos[0] if eos else 0))


def _pad_front(mask: torch.Tensor, width: int) -> torch.Tensor:
    return torch.nn.functional.pad(mask, (width - mask.shape[1], 0))


@dataclass(eq=False)
class _OneRow:
    """A lone request as a `DecodeBatch` row (its stream's `_Run` finishes it)."""

    ids: tuple[int, ...]
    sampler: Sampler | None
    emit: Emit
    prefix_len: int = 0
    cache_salt: str | None = None

    def leave(self, error: BaseException | None = None) -> None:
        pass


class BatchDecoder:
    """One request decoded as a batch of one through `DecodeBatch`: the same steps, sampler and
    numbers as the batched paths (`generate_many`, `MicroBatcher`), greedy or sampled."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.pad_id = pad_id(model, tokenizer)

    def decode(self, request: DecodeRequest, emit: Emit) -> None:
        batch = DecodeBatch(self.model, request.ptokens, pad_id=self.pad_id)
        batch.add([_OneRow(request.ids, Sampler.for_request(self.model, request), emit)])
        while len(batch):
            batch.step()


class PrefixCacheDecoder:
    """Greedy decoding with the prompt prefix's KV cache reused (`runtime.prefix_cache`).
    Sampled requests and prompts without a cacheable prefix go to `fallback`."""

    def __init__(self, cache: PrefixCache, fallback: Decoder) -> None:
        self.cache, self.fallback = cache, fallback

    def decode(self, request: DecodeRequest, emit: Emit) -> None:
        if not request.greedy or not request.prefix_len:
            return self.fallback.decode(request, emit)
        self.cache.greedy(request.ids, request.prefix_len, request.ptokens,
                          max_new_tokens=request.max_new_tokens, emit=emit)


class MixedPrecisionDecoder:
    """Greedy decoding with a cheaper-dtype copy of the weights after a full-precision prefill
    (`runtime.mixed_decode`). Sampled requests go to `fallback` (full precision)."""

    def __init__(self, model: Any, decode_model: Any, fallback: Decoder) -> None:
        self.model, self.decode_model, self.fallback = model, decode_model, fallback

    def decode(self, request: DecodeRequest, emit: Emit) -> None:
        if not request.greedy:
            return self.fallback.decode(request, emit)
        greedy_mixed(self.model, self.decode_model, request.ptokens, request.ids,
                     max_new_tokens=request.max_new_tokens, emit=emit)


def decoder_for(model: Any, tokenizer: Any, *, prefix_cache: PrefixCache | None = None,
                decode_model: Any = None) -> Decoder:
    """The decoder for a model's settings: the prefix cache first (when on and the prompt has a
    cacheable prefix), else bf16/fp16 decoding (when on), else `BatchDecoder`."""
    decoder: Decoder = BatchDecoder(model, tokenizer)
    if decode_model is not None:
        decoder = MixedPrecisionDecoder(model, decode_model, decoder)
    if prefix_cache is not None:
        decoder = PrefixCacheDecoder(prefix_cache, decoder)
    return decoder


class TextAssembler:
    """Turns generated text into the text a caller sees: cut at the first stop sequence after
    the answer's first non-blank character and stripped of surrounding whitespace, emitted
    incrementally so that streamed pieces concatenate to exactly what a non-streamed call returns
    (text that might be the start of a stop sequence, and trailing whitespace, are held back
    until they are known to stay)."""

    def __init__(self, stops: Sequence[str] = ()) -> None:
        self.stops = [s for s in stops if s]
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.buf = ""
        self.sent = 0
        self.started = False
        self.stopped = False
        self.text = ""  # everything emitted so far

    def feed(self, piece: str) -> str:
        """Add generated text; return the new text that is safe to emit."""
        if self.stopped:
            return ""
        self.buf += piece
        # A stop counts once the answer has begun: leading whitespace is stripped anyway, and a
        # model that opens with "\n" must not end a first-line answer before its first word.
        begun = len(self.buf) - len(self.buf.lstrip())
        hits = [i for i in (self.buf.find(s, max(begun, self.sent - len(s))) for s in self.stops)
                if i >= 0]
        if hits:
            self.buf = self.buf[:min(hits)]
            self.stopped = True
        return self._emit(final=self.stopped)

    def finish(self) -> str:
        """The rest of the text once generation has ended."""
        return self._emit(final=True)

    def _emit(self, final: bool) -> str:
        text = self.buf
        safe = text if final else text[: max(0, len(text) - self.hold)]
        end = len(safe.rstrip())
        start = self.sent if self.started else len(text) - len(text.lstrip())
        if end <= start:
            return ""
        self.started, self.sent = True, end
        self.text += text[start:end]
        return text[start:end]


class _Detokenizer:
    """Incremental decoding that adds up to `tokenizer.decode(all ids)`: the ids since the last
    newline are decoded together (so multi-token characters and word joins come out right), and
    a trailing incomplete character (U+FFFD) waits for the token that completes it."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.window: list[int] = []
        self.sent = 0  # characters of the window's text already returned

    def push(self, token: int) -> str:
        self.window.append(token)
        text = self.tokenizer.decode(self.window, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return ""
        new = text[self.sent:]
        if text.endswith("\n"):
            self.window, self.sent = [], 0
        else:
            self.sent = len(text)
        return new

    def flush(self) -> str:
        if not self.window:
            return ""
        text = self.tokenizer.decode(self.window, skip_special_tokens=True)
        new = text[self.sent:]
        self.window, self.sent = [], 0
        return new


@dataclass
class Generation:
    """What one generation produced (final once its stream is exhausted)."""

    text: str = ""
    completion_tokens: int = 0  # generated tokens, EOS and the token that completed a stop incl.
    finish_reason: FinishReason | None = None  # None while running or when cancelled
    token_ids: list[int] = field(default_factory=list)


_END = object()


class _Run:
    """The worker side of one generation: what `emit` needs, shared with the consumer through
    a queue (never a reference to the stream object, so an abandoned stream can be collected)."""

    def __init__(self, tokenizer: Any, request: DecodeRequest, stop: Sequence[str],
                 eos: Sequence[int]) -> None:
        self.request = request
        self.eos = frozenset(eos)
        self.detok = _Detokenizer(tokenizer)
        self.assembler = TextAssembler(stop)
        self.result = Generation()
        self.out: queue.Queue[Any] = queue.Queue()
        self.cancel = threading.Event()
        self.failure: BaseException | None = None
        self.hit_eos = False
        self.sampler: Sampler | None = None  # set by whoever decodes it in a `DecodeBatch`
        self.left = threading.Event()  # set once it left a `DecodeBatch` (done or failed)

    @property
    def ids(self) -> tuple[int, ...]:
        return self.request.ids

    @property
    def prefix_len(self) -> int:
        return self.request.prefix_len

    @property
    def cache_salt(self) -> str | None:
        return self.request.cache_salt

    def leave(self, error: BaseException | None = None) -> None:
        """It left a `DecodeBatch`: finished, or failed with `error`."""
        if error is not None:
            self.failure = error
        else:
            self.finish()
        self.left.set()

    def emit(self, token: int) -> bool:
        if self.cancel.is_set():
            return False
        self.result.token_ids.append(token)
        piece = self.assembler.feed(self.detok.push(token))
        if piece:
            self.out.put(piece)
        self.hit_eos = token in self.eos
        return not (self.assembler.stopped or self.hit_eos or self.cancel.is_set()
                    or len(self.result.token_ids) >= self.request.max_new_tokens)

    def work(self, decoder: Decoder) -> None:
        try:
            decoder.decode(self.request, self.emit)
            self.finish()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer's thread
            self.failure = exc
        finally:
            self.out.put(_END)

    def finish(self) -> None:
        """After the last token: the text's tail, the counts and the finish reason."""
        if self.cancel.is_set():
            return
        tail = self.assembler.feed(self.detok.flush()) + self.assembler.finish()
        if tail:
            self.out.put(tail)
        r = self.result
        r.text, r.completion_tokens = self.assembler.text, len(r.token_ids)
        r.finish_reason = ("stop" if self.assembler.stopped or self.hit_eos else
                           "length" if r.completion_tokens >= self.request.max_new_tokens
                           else "stop")


class RunResults:
    """What a stream over one `_Run` reports (`GenerationStream`, `batching.BatchedStream`)."""

    _run: _Run

    @property
    def result(self) -> Generation:
        return self._run.result

    @property
    def text(self) -> str:
        """The text so far (cut at a stop sequence, stripped); the whole answer once exhausted."""
        return self._run.assembler.text

    @property
    def completion_tokens(self) -> int:
        return len(self._run.result.token_ids)

    @property
    def finish_reason(self) -> FinishReason | None:
        return self._run.result.finish_reason

    @property
    def token_ids(self) -> list[int]:
        return list(self._run.result.token_ids)


class GenerationStream(RunResults):
    """Text pieces of one generation as a worker thread produces them.

    Iterate it (or call `next`) for the pieces; `text`, `completion_tokens`, `finish_reason` and
    `token_ids` are final once it is exhausted. The worker starts on the first `next`.
    `close()`, leaving a `for` loop over it early, or dropping it cancels the generation at its
    next step; `close()` also waits for the worker to finish, so nothing computes afterwards.
    """

    def __init__(self, decoder: Decoder, tokenizer: Any, request: DecodeRequest,
                 stop: Sequence[str] = (), eos: Sequence[int] = ()) -> None:
        self._decoder = decoder
        self._run = _Run(tokenizer, request, stop, eos)
        self._thread: threading.Thread | None = None
        self._done = False

    # ---- iteration ------------------------------------------------------------------------
    def __next__(self) -> str:
        if self._done:
            raise StopIteration
        if self._thread is None:
            self._thread = threading.Thread(target=self._run.work, args=(self._decoder,),
                                            name="editkit-generate", daemon=True)
            self._thread.start()
        item = self._run.out.get()
        if item is _END:
            self._done = True
            self._thread.join()
            if self._run.failure is not None:
                raise self._run.failure
            raise StopIteration
        return item

    def __iter__(self) -> Iterator[str]:
        # A generator, not `self`: when a `for` loop over the stream is left early, this
        # generator is closed and the generation cancelled with it.
        try:
            while True:
                try:
                    piece = next(self)
                except StopIteration:
                    return
                yield piece
        finally:
            if not self._done:
                self.close()

    def close(self) -> None:
        """Cancel the generation (if still running) and wait for its worker to stop."""
        self._run.cancel.set()
        if self._thread is not None:
            self._thread.join()
        self._done = True

    def __enter__(self) -> GenerationStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # dropped unfinished: stop the worker at its next step
        run = getattr(self, "_run", None)
        if run is not None and not getattr(self, "_done", True):
            run.cancel.set()


class TextGenerator:
    """The one generate / stream for one model and tokenizer, over a `Decoder` (`decoder_for`)."""

    def __init__(self, model: Any, tokenizer: Any, decoder: Decoder | None = None, *,
                 prefix_bytes: int = DEFAULT_PREFIX_BYTES) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.decoder = decoder if decoder is not None else BatchDecoder(model, tokenizer)
        # the prompt starts its batches (`new_batch`: `generate_many`, `MicroBatcher`) reuse
        self.prefixes = PrefixStore(prefix_bytes)

    def request(self, ids: Sequence[int], *, ptokens: PTokens | None = None,
                max_new_tokens: int = 32, temperature: float | None = None,
                prefix_len: int = 0, seed: int | None = None,
                cache_salt: str | None = None) -> DecodeRequest:
        """A validated `DecodeRequest` (InvalidInputError names what is wrong)."""
        check_generation_args(max_new_tokens, temperature)
        if not ids:
            raise InvalidInputError("generation needs at least one prompt token.")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise InvalidInputError("seed must be None or an int.")
        if isinstance(prefix_len, bool) or not isinstance(prefix_len, int) \
                or not 0 <= prefix_len <= len(ids):
            raise InvalidInputError("prefix_len must be an int between 0 and the prompt's length.")
        return DecodeRequest(ids=tuple(int(i) for i in ids), ptokens=ptokens,
                             max_new_tokens=max_new_tokens,
                             temperature=float(temperature) if temperature else None,
                             prefix_len=prefix_len, seed=seed, cache_salt=cache_salt)

    def stream(self, ids: Sequence[int], *, ptokens: PTokens | None = None,
               max_new_tokens: int = 32, temperature: float | None = None,
               stop: Sequence[str] | None = (), prefix_len: int = 0,
               seed: int | None = None) -> GenerationStream:
        """A cancellable stream of text pieces after `ids` (greedy unless `temperature > 0`,
        then sampled with `seed`); the text ends before the first of the `stop` strings."""
        request = self.request(ids, ptokens=ptokens, max_new_tokens=max_new_tokens,
                               temperature=temperature, prefix_len=prefix_len, seed=seed)
        return GenerationStream(self.decoder, self.tokenizer, request, _check_stop(stop),
                                model_eos_ids(self.model, self.tokenizer))

    def generate(self, ids: Sequence[int], **kwargs: Any) -> Generation:
        """`stream(...)` run to its end: the whole text, token counts and finish reason."""
        s = self.stream(ids, **kwargs)
        for _ in s:
            pass
        return s.result

    def batch_row(self, ids: Sequence[int], *, ptokens: PTokens | None = None,
                  max_new_tokens: int = 32, stop: Sequence[str] | None = (),
                  temperature: float | None = None, seed: int | None = None,
                  prefix_len: int = 0, cache_salt: str | None = None) -> _Run:
        """One validated request as a `DecodeBatch` row: its `result` is final once `left` is
        set (`failure` holds the error of a batch that failed). prefix_len / cache_salt: the
        leading ids later rows with the same salt may start from (`PrefixStore`)."""
        request = self.request(ids, ptokens=ptokens, max_new_tokens=max_new_tokens,
                               temperature=temperature, seed=seed, prefix_len=prefix_len,
                               cache_salt=cache_salt)
        run = _Run(self.tokenizer, request, _check_stop(stop),
                   model_eos_ids(self.model, self.tokenizer))
        run.sampler = Sampler.for_request(self.model, request)
        return run

    def new_batch(self, ptokens: PTokens | None) -> DecodeBatch:
        """An empty `DecodeBatch` on this model (rows from `batch_row`)."""
        return DecodeBatch(self.model, ptokens, pad_id=pad_id(self.model, self.tokenizer),
                           prefixes=self.prefixes)

    def generate_many(self, prompts: Sequence[Sequence[int]], *,
                      ptokens: PTokens | None = None, max_new_tokens: int = 32,
                      stop: Sequence[str] | None = (), temperature: float | None = None,
                      seeds: Sequence[int | None] | None = None,
                      prefix_lens: Sequence[int] | None = None, cache_salt: str | None = None,
                      batch_size: int = 16,
                      stops: Sequence[Sequence[str]] | None = None) -> list[Generation]:
        """Answers to several prompts decoded together in one `DecodeBatch` of at most
        `batch_size` rows: a prompt takes the place of one that finished at the next step.
        Each gets what `generate` returns for it alone (same text, counts and finish reason;
        argmax ties aside, float rounding differs with the batch shape); sampled rows
        (`temperature > 0`) use their own seed from `seeds`. prefix_lens / cache_salt: each
        prompt's reusable prefix and who may reuse it (`batch_row`). stops: each prompt's own
        stop strings, instead of `stop` for all."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInputError("batch_size must be an int ≥ 1.")
        if seeds is not None and len(seeds) != len(prompts):
            raise InvalidInputError("seeds must hold one seed per prompt.")
        if prefix_lens is not None and len(prefix_lens) != len(prompts):
            raise InvalidInputError("prefix_lens must hold one length per prompt.")
        if stops is not None and len(stops) != len(prompts):
            raise InvalidInputError("stops must hold one list of stop strings per prompt.")
        runs = [self.batch_row(p, ptokens=ptokens, max_new_tokens=max_new_tokens,
                               stop=stop if stops is None else stops[i],
                               temperature=temperature, seed=None if seeds is None else seeds[i],
                               prefix_len=0 if prefix_lens is None else prefix_lens[i],
                               cache_salt=cache_salt)
                for i, p in enumerate(prompts)]
        batch, waiting = self.new_batch(ptokens), list(reversed(runs))
        while waiting or len(batch):
            free = min(batch_size - len(batch), len(waiting))
            batch.add([waiting.pop() for _ in range(free)])
            batch.step()
        for r in runs:
            if r.failure is not None:
                raise r.failure
        return [r.result for r in runs]
