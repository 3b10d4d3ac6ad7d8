"""P-Token artifact config: a small JSON file, validated with pydantic, saved beside the weights."""
from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..layouts import LAYOUT_VERSION

CONFIG_NAME = "ptokens_config.json"
WEIGHTS_NAME = "ptokens.safetensors"
WEIGHTS_KEY = "embeddings"  # one (2m, hidden) tensor: begin rows first, then end rows

DEFAULT_M = 10
"""The number of begin (and of end) tokens wherever none is given: the P-Tokens
`EditableLM.from_pretrained` loads, the ones `editkit train` / `TrainConfig` trains and
`PTokens.create` makes. 10 is the shipped set with the best validation S (docs/results.md)."""

InitKind = Literal["text", "vocab_mean", "random"]


class BaseModelFingerprint(BaseModel):
    """Identifies the base model P-Tokens were trained on; loading onto another one is refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    vocab_size: int = Field(gt=0)
    hidden_size: int = Field(gt=0)
    vocab_hash: str = Field(min_length=8)

    def short(self) -> str:
        return (f"{self.name} (vocab {self.vocab_size}, hidden {self.hidden_size}, "
                f"vocab hash {self.vocab_hash})")

    def same_base(self, other: BaseModelFingerprint) -> bool:
        # The name is informative only: the same weights may be loaded from a path or a Hub id.
        return (self.vocab_size, self.hidden_size, self.vocab_hash) == (
            other.vocab_size, other.hidden_size, other.vocab_hash)


def begin_token(i: int) -> str:
    return f"<BEGIN_EDIT_{i}>"


def end_token(i: int) -> str:
    return f"<END_EDIT_{i}>"


class PTokenConfig(BaseModel):
    """Everything needed to rebuild a P-Token set except the rows themselves."""

    model_config = ConfigDict(extra="forbid")
    m: int = Field(ge=1, le=64, description="number of begin tokens (and of end tokens)")
    begin_tokens: list[str]
    end_tokens: list[str]
    init: InitKind = "text"
    init_text: str | None = None
    seed: int = 0
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    layout_version: int = Field(
        1, ge=1, description="the prompt layout (editkit.layouts.LAYOUT_VERSION) the rows were "
        "trained under; files written before this field existed are version 1")
    base_model: BaseModelFingerprint
    trained: bool = False
    training: dict[str, Any] = Field(default_factory=dict, description="provenance of training")

    @model_validator(mode="after")
    def _consistent(self) -> PTokenConfig:
        if len(self.begin_tokens) != self.m or len(self.end_tokens) != self.m:
            raise ValueError(
                f"m={self.m} but {len(self.begin_tokens)} begin and {len(self.end_tokens)} end "
                "token strings are listed")
        if len(set(self.begin_tokens + self.end_tokens)) != 2 * self.m:
            raise ValueError("P-Token strings must be distinct")
        if self.init == "text" and not self.init_text:
            raise ValueError("init='text' needs init_text")
        return self

    @classmethod
    def default_tokens(cls, m: int) -> tuple[list[str], list[str]]:
        return [begin_token(i) for i in range(m)], [end_token(i) for i in range(m)]

    def layout_problem(self) -> str | None:
        """Why these P-Tokens cannot be used with this editkit's prompt layout (None: they can)."""
        if self.layout_version == LAYOUT_VERSION:
            return None
        return (f"they were trained under prompt layout version {self.layout_version}, but this "
                f"editkit builds layout version {LAYOUT_VERSION}, so they would read prompts "
                "they were never trained on. Retrain them with this version (`editkit train`), "
                "or use the editkit release that wrote them.")


def fingerprint(model: Any, tokenizer: Any, name: str) -> BaseModelFingerprint:
    """Fingerprint a (model, tokenizer) pair: sizes plus a hash of the sorted vocabulary."""
    vocab = sorted(tokenizer.get_vocab().items())
    digest = hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode("utf-8")).hexdigest()
    emb = model.get_input_embeddings()
    return BaseModelFingerprint(
        name=name,
        vocab_size=int(emb.num_embeddings),
        hidden_size=int(emb.embedding_dim),
        vocab_hash=digest[:16],
    )
