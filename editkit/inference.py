"""Forward passes for layouts that may hold P-Tokens: teacher-forced scoring and generation.

Scoring runs the prompt once, keeps its KV cache, and scores all candidates in one batched pass
over that cache: the prompt (hundreds of tokens for IKE) is never recomputed per candidate.
"""
from __future__ import annotations

import inspect
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from .ptokens import PTokens


def input_embeds(model: Any, ptokens: PTokens | None, ids: torch.Tensor) -> torch.Tensor:
    """Embeddings for `ids`; P-Token ids are looked up in the P-Token rows."""
    if ptokens is not None:
        return ptokens.embed(ids)
    return model.get_input_embeddings()(ids)


def _device(model: Any) -> torch.device:
    return model.get_input_embeddings().weight.device


def _cache_kwarg(model: Any) -> str:
    """transformers ≥ 5.x names the KV cache `cache`; earlier releases `past_key_values`."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


@torch.no_grad()
def score_continuations(model: Any, ptokens: PTokens | None, prefix: Sequence[int],
                        continuations: Sequence[Sequence[int]]) -> list[list[float]]:
    """Log-probability of each token of each continuation given `prefix` (teacher forced)."""
    if not prefix:
        raise ValueError("score_continuations needs a non-empty prefix")
    if any(len(c) == 0 for c in continuations):
        raise ValueError("every continuation needs at least one token")
    dev = _device(model)
    ids = torch.tensor([list(prefix)], device=dev)
    out = model(inputs_embeds=input_embeds(model, ptokens, ids), use_cache=True)
    first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
    n, width = len(continuations), max(len(c) for c in continuations)
    results = [[float(first[c[0]])] for c in continuations]
    if width == 1:
        return results
    # Feed all but the last token of each continuation on top of the shared prefix cache.
    pad = 0
    batch = torch.full((n, width - 1), pad, dtype=torch.long, device=dev)
    mask = torch.zeros((n, width - 1), dtype=torch.long, device=dev)
    for i, c in enumerate(continuations):
        batch[i, : len(c) - 1] = torch.tensor(list(c[:-1]), device=dev)
        mask[i, : len(c) - 1] = 1
    name = _cache_kwarg(model)
    cache = getattr(out, name)
    cache.batch_repeat_interleave(n)
    attn = torch.cat([torch.ones((n, len(prefix)), dtype=torch.long, device=dev), mask], dim=1)
    out2 = model(input_ids=batch, attention_mask=attn, use_cache=False, **{name: cache})
    logp = torch.log_softmax(out2.logits.float(), dim=-1)
    for i, c in enumerate(continuations):
        for j in range(1, len(c)):
            results[i].append(float(logp[i, j - 1, c[j]]))
    return results


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
