"""What a model's configs and forward call things: its device, end-of-sequence ids, context
length, embedding scale, and a forward pass that asks for the logits of some positions only."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .cache import cache_kw, sliding_window


def embedding_scale(embedding: Any) -> float:
    """What `embedding` multiplies the rows it looks up by: 1 for a plain `nn.Embedding`,
    sqrt(hidden size) for Gemma's scaled embedding (it scales inside `forward`, so the model
    itself never scales `inputs_embeds`). P-Token rows live in the table's space (the text init
    copies table rows) and are multiplied by the same factor, so an untrained row acts exactly
    as the token it was copied from."""
    scale = getattr(embedding, "scalar_embed_scale", None)
    if scale is None:
        scale = getattr(embedding, "embed_scale", None)
    return 1.0 if scale is None else float(scale)


def model_device(model: Any) -> torch.device:
    """Where the model's input embeddings (and so its inputs) live."""
    return model.get_input_embeddings().weight.device


def eos_ids(model: Any, tokenizer: Any) -> list[int]:
    """The ids that end an answer: the generation config's EOS (an id or a list), else the
    tokenizer's."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        eos = getattr(tokenizer, "eos_token_id", None)
    return [int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos]) if e is not None]


def context_length(model: Any) -> int | None:
    """The model's context window in tokens, where its config states one."""
    cfg = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(cfg, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _with_sliding_window(model: Any, mask: torch.Tensor, position_ids: torch.Tensor | None
                         ) -> torch.Tensor | dict[str, torch.Tensor]:
    """A packed (1, 1, new, all) boolean mask as the per-layer-type masks of a sliding-window
    model: full-attention layers take it as it is; sliding layers also drop keys whose position
    is `window` or more before the query's (position, not index: packed trees restart their
    positions). Cached keys are a prefix, at positions 0..cached-1."""
    window = sliding_window(model)
    if window is None or mask.dtype != torch.bool or mask.dim() != 4:
        return mask
    new, total = mask.shape[-2], mask.shape[-1]
    q_pos = (position_ids[0] if position_ids is not None
             else torch.arange(total - new, total, device=mask.device))
    k_pos = torch.cat([torch.arange(total - new, device=mask.device), q_pos.to(mask.device)])
    near = (q_pos.to(mask.device)[:, None] - k_pos[None, :]) < window
    return {"full_attention": mask, "sliding_attention": mask & near[None, None]}


def forward_last_logits(model: Any, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                        position_ids: torch.Tensor, cache: Any) -> torch.Tensor:
    """Logits (batch, vocab) at the last position of every row of a left-padded batch, reading
    and extending `cache`. `attention_mask` is the 2D padding mask over everything the cache
    holds plus what is fed; the model builds its causal (and sliding-window) masks from it."""
    kwargs: dict[str, Any] = {"inputs_embeds": inputs_embeds, "attention_mask": attention_mask,
                              "position_ids": position_ids, cache_kw(model): cache,
                              "use_cache": True}
    try:
        logits = model(**kwargs, logits_to_keep=1).logits
    except TypeError as exc:  # an architecture without logits_to_keep refuses it at the call
        if "logits_to_keep" not in str(exc):
            raise
        logits = model(**kwargs).logits
    return logits[:, -1]


def forward_logits(model: Any, inputs_embeds: torch.Tensor, *,
                   keep: int | Sequence[int] | None = None,
                   attention_mask: torch.Tensor | None = None,
                   position_ids: torch.Tensor | None = None,
                   cache: Any = None) -> torch.Tensor:
    """Logits (rows, vocab) of the one sequence in `inputs_embeds` (batch of 1).

    keep: None for every position; an int n for the last n positions; an increasing list of
    positions (counted in what is fed now, not in what `cache` already holds) for those rows.
    The model is asked for only those rows (`logits_to_keep`: on a long prompt that skips most
    of the output projection). If its forward refuses the argument (TypeError at the call),
    it is called without; if it ignores it (a `**kwargs` that swallows it), all rows come back and
    the kept ones are picked here, so the result never depends on which case applies.

    cache: a KV cache to read and extend (its positions precede the ones fed); None runs without.
    """
    kwargs: dict[str, Any] = {"inputs_embeds": inputs_embeds}
    if attention_mask is not None:
        kwargs["attention_mask"] = _with_sliding_window(model, attention_mask, position_ids)
    if position_ids is not None:
        kwargs["position_ids"] = position_ids
    if cache is not None:
        kwargs[cache_kw(model)] = cache
    kwargs["use_cache"] = cache is not None
    n = int(inputs_embeds.shape[1])
    if keep is None:
        rows: list[int] | None = None
    elif isinstance(keep, int):
        rows = list(range(n - keep, n))
    else:
        rows = [int(k) for k in keep]
    if rows is None:
        return model(**kwargs).logits[0]
    arg: int | torch.Tensor = keep if isinstance(keep, int) else torch.tensor(
        rows, device=inputs_embeds.device)
    try:
        logits = model(**kwargs, logits_to_keep=arg).logits[0]
    except TypeError as exc:  # an architecture without logits_to_keep refuses it at the call
        if "logits_to_keep" not in str(exc):
            raise
        logits = model(**kwargs).logits[0]
    if logits.shape[0] != len(rows):  # every position was projected (the argument was refused
        logits = logits[rows]         # or silently ignored): pick the kept rows
    return logits
