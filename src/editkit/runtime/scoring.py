"""Teacher-forced scoring of layouts that may hold P-Tokens: one packed forward for everyone.

Scoring packs a shared prefix (demonstrations, fact) and every (question, target) branch of it into
one sequence with a tree-shaped attention mask: the prefix (hundreds of tokens for IKE) and each
question are computed once, not once per candidate.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..compat import forward_logits, model_device
from ..errors import InvalidInputError
from ..ptokens import PTokens


def input_embeds(model: Any, ptokens: PTokens | None, ids: torch.Tensor) -> torch.Tensor:
    """Embeddings for `ids`; P-Token ids are looked up in the P-Token rows."""
    if ptokens is not None:
        return ptokens.embed(ids)
    return model.get_input_embeddings()(ids)


@dataclass
class ScoreItem:
    """One question (token ids, may be empty) and the targets to score after it."""

    question: list[int]
    targets: list[list[int]]


@dataclass
class TargetScore:
    """Per target token: its log-probability and the model's argmax at that position."""

    logprobs: list[float]
    argmax: list[int]

    @property
    def mean_logprob(self) -> float:
        return sum(self.logprobs) / len(self.logprobs)


def _pack(prefix: Sequence[int], items: Sequence[ScoreItem]) -> tuple[
        list[int], list[int], torch.Tensor, list[list[tuple[int, list[int]]]]]:
    """Lay a prefix and many (question, targets) branches out as one sequence.

    Returns ids, position ids, a boolean attention mask (True = may attend) and, per item and
    target, the position whose logits predict the target's first token plus the positions of the
    target's own tokens. Each question sees the prefix and itself; each target sees the prefix,
    its question and itself, never a sibling target. That is the same computation as scoring every
    `prefix + question + target` separately, with the shared parts computed once.
    """
    ids, pos = list(prefix), list(range(len(prefix)))
    spans: list[tuple[int, int, int]] = []  # (start, end, parent span index or -1)
    where: list[list[tuple[int, list[int]]]] = []
    for item in items:
        q_start = len(ids)
        ids += item.question
        pos += range(len(prefix), len(prefix) + len(item.question))
        q_span = len(spans)
        spans.append((q_start, len(ids), -1))
        last = len(ids) - 1  # predicts the first target token
        if last < 0:
            raise InvalidInputError("scoring needs at least one token before the target")
        base = len(prefix) + len(item.question)
        entry = []
        for target in item.targets:
            if not target:
                raise InvalidInputError("every target needs at least one token")
            t_start = len(ids)
            ids += target[:-1]  # the last target token is predicted, never fed
            pos += range(base, base + len(target) - 1)
            spans.append((t_start, len(ids), q_span))
            entry.append((last, list(range(t_start, len(ids)))))
        where.append(entry)
    n = len(ids)
    mask = torch.zeros((n, n), dtype=torch.bool)
    p = len(prefix)
    mask[:, :p] = True
    mask[:p, :p] = torch.tril(torch.ones((p, p), dtype=torch.bool))
    for start, end, parent in spans:
        block = torch.tril(torch.ones((end - start, end - start), dtype=torch.bool))
        mask[start:end, start:end] = block
        if parent >= 0:
            ps, pe, _ = spans[parent]
            mask[start:end, ps:pe] = True
    return ids, pos, mask, where


def packed_logprobs(model: Any, ptokens: PTokens | None, prefix: Sequence[int],
                    items: Sequence[ScoreItem], *, cache: Any = None,
                    cached: int = 0) -> list[list[torch.Tensor]]:
    """Next-token log-distributions (T, vocab) at each target token's position, per item and target.

    One forward pass over the packed tree: the one packed forward every scorer uses (evaluation,
    training, `EditableLM.score`, the prefix caches). Gradients flow to the P-Token rows when
    called outside `torch.no_grad()` (training uses this with the student layout).

    cache / cached: a KV cache that already holds the first `cached` tokens of `prefix` (a
    `PrefixCache` entry); only the rest is fed, and the cache grows by it (the caller crops it
    back). The first target position must not be cached: its logits are needed.
    """
    ids, pos, mask, where = _pack(prefix, items)
    return _logprobs_at(model, ptokens, ids, pos, mask, where, cache=cache, cached=cached)


def packed_logprobs_many(model: Any, ptokens: PTokens | None,
                         groups: Sequence[tuple[Sequence[int], Sequence[ScoreItem]]]
                         ) -> list[list[list[torch.Tensor]]]:
    """`packed_logprobs` for several (prefix, items) trees in one forward pass.

    The trees are laid side by side with a block-diagonal mask and positions that restart at 0 in
    each, so every tree computes what it computes alone (up to float rounding). Training uses
    it: a batch's dozen short trees (40-200 tokens each) as one forward runs about 1.8x faster on
    CPU than a forward per tree, because small matmuls waste most of their time on overhead.
    Callers bound the total length: the mask is quadratic in it.
    """
    ids: list[int] = []
    pos: list[int] = []
    masks, where = [], []
    for prefix, items in groups:
        g_ids, g_pos, g_mask, g_where = _pack(prefix, items)
        off = len(ids)
        ids += g_ids
        pos += g_pos
        masks.append(g_mask)
        where.append([[(first + off, [i + off for i in own]) for first, own in entry]
                      for entry in g_where])
    flat = _logprobs_at(model, ptokens, ids, pos, torch.block_diag(*masks),
                        [entry for g in where for entry in g])
    out, start = [], 0
    for g in where:
        out.append(flat[start: start + len(g)])
        start += len(g)
    return out


def tree_tokens(prefix: Sequence[int], items: Sequence[ScoreItem]) -> int:
    """How many tokens a packed tree feeds (the last token of each target is never fed)."""
    return len(prefix) + sum(len(it.question) + sum(len(t) - 1 for t in it.targets)
                             for it in items)


def forests(trees: Sequence[Any], budget: int) -> list[list[Any]]:
    """Consecutive trees ((prefix, items, ...) tuples) in runs of at most `budget` tokens (a
    larger tree goes alone): each run is one `packed_logprobs_many` forward. Training batches
    and `EditableLM.score_many` group their trees this way."""
    runs: list[list[Any]] = []
    size = budget + 1
    for tree in trees:
        n = tree_tokens(tree[0], tree[1])
        if size + n > budget:
            runs.append([])
            size = 0
        runs[-1].append(tree)
        size += n
    return runs


def _logprobs_at(model: Any, ptokens: PTokens | None, ids: list[int], pos: list[int],
                 mask: torch.Tensor, where: list[list[tuple[int, list[int]]]], *,
                 cache: Any = None, cached: int = 0) -> list[list[torch.Tensor]]:
    """The forward pass of a packed sequence and the log-distributions at the `where` rows."""
    dev = model_device(model)
    # Only the positions that predict a target token need the vocabulary projection: on a
    # 1,000-token IKE prefix that skips almost all of the (576 x 49k) output matmul.
    keep = sorted({i for entry in where for first, own in entry for i in (first, *own)})
    if not 0 <= cached <= keep[0] or (cached and cache is None):
        raise ValueError(f"cached={cached} must be covered by a cache and precede the first "
                         f"scored position ({keep[0]})")
    row = {p: r for r, p in enumerate(keep)}
    t_ids = torch.tensor([ids[cached:]], device=dev)
    logits = forward_logits(model, input_embeds(model, ptokens, t_ids),
                            keep=[k - cached for k in keep],
                            attention_mask=mask[cached:][None, None].to(dev),
                            position_ids=torch.tensor([pos[cached:]], device=dev),
                            cache=cache if cached else None)
    result = []
    for entry in where:
        result.append([torch.log_softmax(logits[[row[first], *(row[i] for i in own)]].float(),
                                         dim=-1) for first, own in entry])
    return result


def target_logprobs(logp: torch.Tensor, target: Sequence[int]) -> torch.Tensor:
    """The log-prob of each target token under its (T, vocab) teacher-forced log-distribution."""
    return logp.gather(-1, torch.tensor(target, device=logp.device)[:, None])[:, 0]


@torch.no_grad()
def score_packed(model: Any, ptokens: PTokens | None, prefix: Sequence[int],
                 items: Sequence[ScoreItem], *, cache: Any = None,
                 cached: int = 0) -> list[list[TargetScore]]:
    """Teacher-forced log-probs (and argmax) of every target of every item, in one forward pass
    (`cache`/`cached` as in `packed_logprobs`)."""
    dists = packed_logprobs(model, ptokens, prefix, items, cache=cache, cached=cached)
    results = []
    for item, row_d in zip(items, dists, strict=True):
        row = []
        for target, logp in zip(item.targets, row_d, strict=True):
            row.append(TargetScore(logprobs=target_logprobs(logp, target).tolist(),
                                   argmax=logp.argmax(-1).tolist()))
        results.append(row)
    return results


def score_continuations(model: Any, ptokens: PTokens | None, prefix: Sequence[int],
                        continuations: Sequence[Sequence[int]], *, cache: Any = None,
                        cached: int = 0) -> list[list[float]]:
    """Log-probability of each token of each continuation given `prefix` (teacher forced)."""
    if not prefix:
        raise InvalidInputError("score_continuations needs a non-empty prefix")
    item = ScoreItem(question=[], targets=[list(c) for c in continuations])
    return [t.logprobs for t in score_packed(model, ptokens, prefix, [item], cache=cache,
                                             cached=cached)[0]]
