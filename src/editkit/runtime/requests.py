"""What a generation request is, before anything computes it: the argument checks, the
`DecodeRequest` every decoder takes, the `Decoder` protocol they share, and the `Sampler` that
draws a sampled token.

These sit below everything else in the generation stack (the decode loop, the decoders, the
streams) so that each of those can name a request without importing the others. Callers:
`TextGenerator.request` / `batch_row` build requests (`runtime.generation`), `EditableLM` and
the LangChain chat model validate their arguments with `check_generation_args` / `check_stop`,
`DecodeBatch` and `BatchDecoder` draw sampled tokens with `Sampler`.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch

from ..compat import model_device
from ..errors import InvalidInputError
from ..limits import MAX_NEW_TOKENS
from ..ptokens import PTokens
from .prefix_cache import Emit

__all__ = ["DecodeRequest", "Decoder", "FinishReason", "Sampler", "check_generation_args",
           "check_stop"]


FinishReason = Literal["stop", "length"]


def check_generation_args(max_new_tokens: Any, temperature: Any = None, *,
                          name: str = "max_new_tokens") -> None:
    """InvalidInputError unless `max_new_tokens` is an int in [1, MAX_NEW_TOKENS] and
    `temperature` is None or a number ≥ 0 (None or 0: greedy)."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) \
            or not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
        raise InvalidInputError(f"{name} must be an int between 1 and {MAX_NEW_TOKENS}.")
    if temperature is not None and (isinstance(temperature, bool)
                                    or not isinstance(temperature, (int, float))
                                    or not temperature >= 0):
        raise InvalidInputError("temperature must be None or a number ≥ 0.")


def check_stop(stop: Any) -> list[str]:
    """Stop strings as given to a generation: None or a list of strings (empty ones dropped)."""
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
