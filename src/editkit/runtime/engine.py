"""The seam between editkit and whatever runs the model.

editkit owns the edit memory, retrieval, the relevance gate, the prompt layout and the escaping
of user text; an `Engine` owns the forward passes. Everything that reaches the model goes through
this one narrow interface: `EditableLM` (ask, stream, ask_many, score), and through it the
server, LangChain and the evaluation tasks.

- `InProcessEngine` (here): the model loaded in this process, P-Tokens as extra embedding rows,
  the batched decoder, the prefix stores and the cached scorer of `editkit.runtime`.
- `RemoteEngine` (`runtime.remote`): any OpenAI-compatible `/v1/completions` endpoint (vLLM,
  SGLang, TGI, llama.cpp's server, `transformers serve`) serving `editkit export --format hf`
  output, P-Tokens as that export's special tokens.

A request is a built `Prompt` (ids and text; the P-Token layout decided already) plus one
`GenerateOptions`: the fields every generation carries, in one object instead of threaded through
each signature.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

from ..layouts import Mode, Prompt
from .batching import MicroBatcher
from .decoders import decoder_for
from .generation import Generation, TextGenerator
from .mixed_decode import decode_copy
from .prefix_cache import CachedScorer, PrefixCache
from .prefix_store import DEFAULT_PREFIX_BYTES
from .requests import FinishReason
from .scoring import ScoreItem, forests, packed_logprobs_many, target_logprobs


@dataclass(frozen=True)
class GenerateOptions:
    """How to generate after one prompt.

    stop: strings that end the answer (cut before the first one found after the answer's first
    non-blank character); temperature: None for greedy decoding, else sampled with `seed`;
    namespace: whose edits built the prompt: cached keys and values of its prefix serve later
    requests of that namespace only.
    """

    max_new_tokens: int = 32
    stop: tuple[str, ...] = ()
    temperature: float | None = None
    seed: int | None = None
    namespace: str | None = None


@runtime_checkable
class TextStream(Protocol):
    """A generation's text pieces as they come; `text`, `completion_tokens` and
    `finish_reason` are final once it is exhausted; `close()` cancels it."""

    @property
    def text(self) -> str: ...
    @property
    def completion_tokens(self) -> int: ...
    @property
    def finish_reason(self) -> FinishReason | None: ...
    def __iter__(self) -> Iterator[str]: ...
    def __next__(self) -> str: ...
    def close(self) -> None: ...


@runtime_checkable
class Engine(Protocol):
    """What runs the model. `shared=True` asks for the concurrent path (requests from several
    threads decoded together: the server, LangChain's batch); `False` for one caller's own
    request (`ask`, `stream`)."""

    kind: str  # "in-process" or "remote"

    def stream(self, prompt: Prompt, options: GenerateOptions, *,
               shared: bool = False) -> TextStream: ...
    def generate(self, prompt: Prompt, options: GenerateOptions, *,
                 shared: bool = False) -> Generation: ...
    def generate_many(self, prompts: Sequence[Prompt], options: Sequence[GenerateOptions], *,
                      batch_size: int = 16) -> list[Generation]: ...
    def arriving(self) -> AbstractContextManager[Any]: ...
    def score(self, requests: Sequence[tuple[Prompt, Sequence[Sequence[int]]]], *,
              forest_tokens: int | None = 4096) -> list[list[list[float]]]: ...
    @property
    def context_length(self) -> int | None: ...


class InProcessEngine:
    """The model in this process (the default engine).

    Which decoder runs is decided here, once, from the settings: a prefix cache or a bf16 decode
    copy give per-sequence decoders (requests decode alone); otherwise the batched decoder, whose
    shared path (`MicroBatcher`) lets concurrent requests join one running batch. The scorer
    always keeps the KV cache of the edit-independent head (chat head, P-Token begin markers).
    """

    kind = "in-process"

    def __init__(self, model: Any, tokenizer: Any, ptokens: Any, *, prefix_cache: int = 0,
                 decode_dtype: str | None = None,
                 prefix_store_mb: float = DEFAULT_PREFIX_BYTES / 2**20) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.ptokens = ptokens  # the one P-Token set; EditableLM.ptokens assigns it here too
        # Optional bf16/fp16 copy of the weights for greedy decoding after an fp32 prefill
        # (runtime.mixed_decode): faster on CPUs where decoding is memory-bound.
        self.decode_model = decode_copy(model, decode_dtype) if decode_dtype else None
        # KV caches of the last `prefix_cache` prompt prefixes (demonstrations + fact).
        self.prefix_cache = PrefixCache(model, prefix_cache) if prefix_cache else None
        self.generator = TextGenerator(model, tokenizer, decoder_for(
            model, tokenizer, prefix_cache=self.prefix_cache, decode_model=self.decode_model),
            prefix_bytes=int(prefix_store_mb * 2**20))
        self.scorer = CachedScorer(model, self.prefix_cache)
        self.batcher = MicroBatcher(self.generator)

    @property
    def context_length(self) -> int | None:
        from ..compat import context_length
        return context_length(self.model)

    @property
    def decodes_alone(self) -> bool:
        """Per-sequence decoders (prefix cache, bf16 copy): requests do not join a batch."""
        return self.prefix_cache is not None or self.decode_model is not None

    def _ptokens_for(self, prompt: Prompt) -> Any:
        """The P-Tokens a prompt's ids refer to (only P-Token layouts hold any)."""
        return self.ptokens if prompt.mode is Mode.PTOKENS else None

    def stream(self, prompt: Prompt, options: GenerateOptions, *,
               shared: bool = False) -> TextStream:
        return self._run("stream", prompt, options, shared)

    def generate(self, prompt: Prompt, options: GenerateOptions, *,
                 shared: bool = False) -> Generation:
        return self._run("generate", prompt, options, shared)

    def _run(self, how: str, prompt: Prompt, o: GenerateOptions, shared: bool) -> Any:
        """`how` ("stream" / "generate") on the shared batch or this caller's own decoder."""
        if shared and not self.decodes_alone:
            # Every prompt shares this model's P-Token set: it only replaces P-Token ids, so
            # the prompts of all modes can share a batch.
            return getattr(self.batcher, how)(
                prompt.ids, ptokens=self.ptokens, max_new_tokens=o.max_new_tokens, stop=o.stop,
                temperature=o.temperature, seed=o.seed, prefix_len=prompt.prefix_len,
                cache_salt=o.namespace)
        return getattr(self.generator, how)(
            prompt.ids, ptokens=self._ptokens_for(prompt), max_new_tokens=o.max_new_tokens,
            temperature=o.temperature, stop=o.stop, prefix_len=prompt.prefix_len, seed=o.seed)

    def generate_many(self, prompts: Sequence[Prompt], options: Sequence[GenerateOptions], *,
                      batch_size: int = 16) -> list[Generation]:
        """Decoded together, `batch_size` rows at a time (a finished row's place goes to the next
        prompt). One P-Token set serves every row. Settings shared by all rows (token limit,
        sampling, namespace) come from the first options."""
        first = options[0] if options else GenerateOptions()
        return self.generator.generate_many(
            [p.ids for p in prompts], ptokens=self.ptokens,
            max_new_tokens=first.max_new_tokens, stops=[o.stop for o in options],
            temperature=first.temperature, seeds=[o.seed for o in options],
            batch_size=batch_size, prefix_lens=[p.prefix_len for p in prompts],
            cache_salt=first.namespace)

    def arriving(self) -> AbstractContextManager[Any]:
        """Hold the running batch open while a request is being prepared (see MicroBatcher)."""
        return self.batcher.arriving()

    @torch.no_grad()
    def score(self, requests: Sequence[tuple[Prompt, Sequence[Sequence[int]]]], *,
              forest_tokens: int | None = 4096) -> list[list[list[float]]]:
        """Per request, the log-probability of each token of each continuation after the prompt
        (teacher forced). `forest_tokens=None` (`EditableLM.score`): one request through the
        cached scorer (the head's and, with a prefix cache, the edit's KV cache reused); else
        (`score_many`) the requests side by side in packed forests of at most that many tokens."""
        if forest_tokens is None:
            [(p, conts)] = requests
            return [self.scorer.continuations(p.ids, self._ptokens_for(p), conts,
                                              prefix_len=p.prefix_len, head_len=p.head_len)]
        # Trees of every mode share one forward: the P-Token rows only replace P-Token ids, so
        # the prompts without any are embedded as they would be alone.
        trees = [(p.ids, [ScoreItem(question=[], targets=[list(c) for c in conts])], i)
                 for i, (p, conts) in enumerate(requests)]
        out: list[list[list[float]]] = [[] for _ in requests]
        for run in forests(trees, forest_tokens):
            dists = packed_logprobs_many(self.model, self.ptokens,
                                         [(ids, items) for ids, items, _ in run])
            for (_, items, i), tree in zip(run, dists, strict=True):
                out[i] = [target_logprobs(d, t).tolist()
                          for d, t in zip(tree[0], items[0].targets, strict=True)]
        return out

