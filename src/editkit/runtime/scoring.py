"""Forward passes for layouts that may hold P-Tokens: teacher-forced scoring and generation.

Scoring packs a shared prefix (demonstrations, fact) and every (question, target) branch of it into
one sequence with a tree-shaped attention mask: the prefix (hundreds of tokens for IKE) and each
question are computed once, not once per candidate.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..ptokens import PTokens


def input_embeds(model: Any, ptokens: PTokens | None, ids: torch.Tensor) -> torch.Tensor:
    """Embeddings for `ids`; P-Token ids are looked up in the P-Token rows."""
    if ptokens is not None:
        return ptokens.embed(ids)
    return model.get_input_embeddings()(ids)


def _device(model: Any) -> torch.device:
    return model.get_input_embeddings().weight.device


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
            raise ValueError("scoring needs at least one token before the target")
        base = len(prefix) + len(item.question)
        entry = []
        for target in item.targets:
            if not target:
                raise ValueError("every target needs at least one token")
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
                    items: Sequence[ScoreItem]) -> list[list[torch.Tensor]]:
    """Next-token log-distributions (T, vocab) at each target token's position, per item and target.

    One forward pass over the packed tree. Gradients flow to the P-Token rows when called outside
    `torch.no_grad()` (training uses this with the student layout).
    """
    ids, pos, mask, where = _pack(prefix, items)
    dev = _device(model)
    t_ids = torch.tensor([ids], device=dev)
    # Only the positions that predict a target token need the vocabulary projection: on a
    # 1,000-token IKE prefix that skips almost all of the (576 x 49k) output matmul.
    keep = sorted({i for entry in where for first, own in entry for i in (first, *own)})
    row = {p: r for r, p in enumerate(keep)}
    kwargs = {"inputs_embeds": input_embeds(model, ptokens, t_ids),
              "attention_mask": mask[None, None].to(dev),
              "position_ids": torch.tensor([pos], device=dev), "use_cache": False}
    try:
        logits = model(**kwargs, logits_to_keep=torch.tensor(keep, device=dev)).logits[0]
    except TypeError:  # an architecture without logits_to_keep
        logits = model(**kwargs).logits[0]
    if logits.shape[0] != len(keep):  # every position was projected (the argument was refused
        logits = logits[keep]         # or silently ignored via **kwargs): pick the kept rows
    result = []
    for entry in where:
        result.append([torch.log_softmax(logits[[row[first], *(row[i] for i in own)]].float(),
                                         dim=-1) for first, own in entry])
    return result


@torch.no_grad()
def score_packed(model: Any, ptokens: PTokens | None, prefix: Sequence[int],
                 items: Sequence[ScoreItem]) -> list[list[TargetScore]]:
    """Teacher-forced log-probs (and argmax) of every target of every item, in one forward pass."""
    dists = packed_logprobs(model, ptokens, prefix, items)
    results = []
    for item, row_d in zip(items, dists):
        row = []
        for target, logp in zip(item.targets, row_d):
            tgt = torch.tensor(target, device=logp.device)
            row.append(TargetScore(logprobs=logp.gather(1, tgt[:, None])[:, 0].tolist(),
                                   argmax=logp.argmax(-1).tolist()))
        results.append(row)
    return results


def score_continuations(model: Any, ptokens: PTokens | None, prefix: Sequence[int],
                        continuations: Sequence[Sequence[int]]) -> list[list[float]]:
    """Log-probability of each token of each continuation given `prefix` (teacher forced)."""
    if not prefix:
        raise ValueError("score_continuations needs a non-empty prefix")
    item = ScoreItem(question=[], targets=[list(c) for c in continuations])
    return [t.logprobs for t in score_packed(model, ptokens, prefix, [item])[0]]


def _generate_kwargs(model: Any, tokenizer: Any, ptokens: PTokens | None, prefix: Sequence[int],
                     max_new_tokens: int, do_sample: bool, temperature: float) -> dict[str, Any]:
    dev = _device(model)
    ids = torch.tensor([list(prefix)], device=dev)
    kwargs: dict[str, Any] = dict(
        inputs_embeds=input_embeds(model, ptokens, ids),
        attention_mask=torch.ones_like(ids),
        max_new_tokens=max_new_tokens,
        do_sample=do_sample,
        pad_token_id=tokenizer.pad_token_id,
    )
    if do_sample:
        kwargs["temperature"] = temperature
    else:  # greedy: drop sampling knobs a model's generation_config may carry
        kwargs.update(temperature=None, top_p=None, top_k=None)
    return kwargs


@torch.no_grad()
def generate(model: Any, tokenizer: Any, ptokens: PTokens | None, prefix: Sequence[int], *,
             max_new_tokens: int = 32, do_sample: bool = False,
             temperature: float = 1.0) -> list[int]:
    """New token ids after `prefix` (greedy by default). P-Tokens cannot be produced: the output
    layer has no rows for them."""
    kwargs = _generate_kwargs(model, tokenizer, ptokens, prefix, max_new_tokens, do_sample,
                              temperature)
    out = model.generate(**kwargs)
    return [int(t) for t in out[0].tolist()]


def stream(model: Any, tokenizer: Any, ptokens: PTokens | None, prefix: Sequence[int], *,
           max_new_tokens: int = 32, do_sample: bool = False,
           temperature: float = 1.0) -> Iterator[str]:
    """Yield decoded text pieces as they are generated (generation runs in a worker thread)."""
    from transformers import TextIteratorStreamer

    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    kwargs = _generate_kwargs(model, tokenizer, ptokens, prefix, max_new_tokens, do_sample,
                              temperature)
    failure: list[BaseException] = []

    def work() -> None:
        try:
            with torch.no_grad():
                model.generate(**kwargs, streamer=streamer)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer's thread
            failure.append(exc)
            streamer.end()

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    for piece in streamer:
        if piece:
            yield piece
    thread.join()
    if failure:
        raise failure[0]
