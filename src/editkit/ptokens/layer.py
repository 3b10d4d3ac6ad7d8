"""The trainable rows. Like PEFT's TrainableTokens, only the new rows are parameters.

The base model is never resized or mutated: P-Token ids sit just past the model's embedding
table (ids >= num_embeddings), and `embed()` builds `inputs_embeds` by looking up ordinary ids in
the frozen table and P-Token ids in `weight`. Because the output layer has no rows for those ids,
the model can never generate or score a P-Token.
"""
from __future__ import annotations

import torch
from torch import nn

from ..compat import embedding_scale


class PTokenEmbedding(nn.Module):
    """(2m, hidden) trainable rows appended, virtually, to a frozen embedding table."""

    def __init__(self, rows: torch.Tensor, first_id: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(rows.detach().clone())
        self.first_id = int(first_id)

    @property
    def num_tokens(self) -> int:
        return int(self.weight.shape[0])

    def is_ptoken(self, input_ids: torch.Tensor) -> torch.Tensor:
        return input_ids >= self.first_id

    def forward(self, input_ids: torch.Tensor, base: nn.Embedding) -> torch.Tensor:
        mask = self.is_ptoken(input_ids)
        embeds = base(input_ids.masked_fill(mask, 0))
        if not bool(mask.any()):
            return embeds
        rows = self.weight.to(embeds.dtype)[(input_ids - self.first_id).clamp(min=0)]
        scale = embedding_scale(base)  # Gemma scales looked-up rows; P-Token rows get the same
        if scale != 1.0:
            rows = rows * scale
        # torch.where keeps the graph to `weight` so gradients reach only the P-Token rows.
        return torch.where(mask.unsqueeze(-1), rows, embeds)
