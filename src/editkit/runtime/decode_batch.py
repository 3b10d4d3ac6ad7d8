"""The one decode loop: `DecodeBatch`, many sequences decoded together, one token per step.

Every in-process generation runs through it, so that a request gets the same tokens alone or
in a batch: `BatchDecoder` runs a batch of one (`runtime.decoders`), `TextGenerator.new_batch` /
`generate_many` a batch of many (`runtime.generation`), and the server's `MicroBatcher` one
running batch that concurrent requests join and leave (`runtime.batching`). Here too are the
helpers only the loop needs: how rows are grouped into prefill forwards (`_groups`), how much
of a stored start a row shares (`_common_start`), and the row / mask / cache bookkeeping when
rows leave (`_select`, `_trim_front`, `_pad_front`), plus `pad_id`, the id padding is filled with.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

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
from ..ptokens import PTokens
from .prefix_store import Prefix, PrefixStore
from .requests import Sampler
from .scoring import input_embeds

__all__ = ["DecodeBatch", "pad_id"]


class _Row(Protocol):
    """What `DecodeBatch` needs from one sequence."""

    ids: tuple[int, ...]
    sampler: Sampler | None
    prefix_len: int  # leading ids worth keeping for later rows (0: none); see `PrefixStore`
    cache_salt: str | None  # who may reuse that prefix

    def emit(self, token: int) -> bool: ...  # False: the sequence is done

    def leave(self, error: BaseException | None = None) -> None: ...  # it left the batch


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
