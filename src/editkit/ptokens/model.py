"""P-Tokens bound to a base model: create (three inits), embed, save_pretrained, from_pretrained."""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from ..errors import ArtifactError, PTokenMismatchError
from ..fileio import atomic_write
from ..layouts import LAYOUT_VERSION
from .config import (
    CONFIG_NAME,
    DEFAULT_M,
    WEIGHTS_KEY,
    WEIGHTS_NAME,
    BaseModelFingerprint,
    InitKind,
    PTokenConfig,
    fingerprint,
)
from .layer import PTokenEmbedding

log = logging.getLogger(__name__)

# Where the rows of untrained P-Tokens start (init="text"): they cycle through this text's token
# embeddings. Not prompt text (it never appears in a prompt), so it lives here, not in layouts.
DEFAULT_INIT_TEXT = " new fact"


@functools.cache
def warn_untrained(model_name: str, m: int) -> None:
    """Log, once per process and (model, m), that untrained P-Tokens are in use and how to train
    them: editkit ships trained P-Tokens only for its default model."""
    log.warning(
        "No trained P-Tokens ship for %r (m=%d): using untrained ones, initialised from the text "
        "%r, so mode='ptokens' will edit poorly. Train a set with `editkit train --model <this "
        "model> --m %d --out DIR` and load it with EditableLM.from_pretrained(..., ptokens=DIR), "
        "or use mode='ike' / 'prompt'.", model_name, m, DEFAULT_INIT_TEXT, m)


class PTokens:
    """m begin and m end tokens for one base model. Only `parameters()` are trainable."""

    def __init__(self, config: PTokenConfig, rows: torch.Tensor, model: Any) -> None:
        emb = model.get_input_embeddings()
        expected = (2 * config.m, int(emb.embedding_dim))
        if tuple(rows.shape) != expected:
            raise ArtifactError(f"P-Token rows have shape {tuple(rows.shape)}, expected {expected} "
                                f"for m={config.m}.")
        if not torch.isfinite(rows).all():
            raise ArtifactError("P-Token rows contain NaN or infinite values.")
        self.config = config
        self.model = model
        self.layer = PTokenEmbedding(rows.float(), first_id=int(emb.num_embeddings))
        self.layer.to(emb.weight.device)

    # ---- ids ------------------------------------------------------------------------------
    @property
    def m(self) -> int:
        return self.config.m

    @property
    def begin_ids(self) -> list[int]:
        return [self.layer.first_id + i for i in range(self.m)]

    @property
    def end_ids(self) -> list[int]:
        return [self.layer.first_id + self.m + i for i in range(self.m)]

    def token_string(self, token_id: int) -> str:
        """The display string of a P-Token id (`<BEGIN_EDIT_0>`, ...)."""
        names = self.config.begin_tokens + self.config.end_tokens
        return names[token_id - self.layer.first_id]

    # ---- compute --------------------------------------------------------------------------
    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """inputs_embeds for ids that may contain P-Token ids (the frozen table for the rest)."""
        if int(input_ids.max()) >= self.layer.first_id + self.layer.num_tokens:
            raise ArtifactError("input ids reference P-Tokens beyond this set's 2m rows")
        return self.layer(input_ids, self.model.get_input_embeddings())

    def parameters(self) -> list[torch.nn.Parameter]:
        """The only trainable tensors: the 2m new rows."""
        return [self.layer.weight]

    # ---- creation -------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        model: Any,
        tokenizer: Any,
        *,
        name: str,
        m: int = DEFAULT_M,
        init: InitKind = "text",
        init_text: str | None = DEFAULT_INIT_TEXT,
        seed: int = 0,
    ) -> PTokens:
        """New, untrained P-Tokens.

        - text: rows cycle through the embeddings of `init_text`'s tokens (PEFT's TEXT prompt init),
        - vocab_mean: every row is the mean of the vocabulary's embeddings,
        - random: N(mean, std) of the vocabulary's embeddings, seeded.
        """
        begin, end = PTokenConfig.default_tokens(m)
        try:
            config = PTokenConfig(m=m, begin_tokens=begin, end_tokens=end, init=init,
                                  init_text=init_text if init == "text" else None, seed=seed,
                                  layout_version=LAYOUT_VERSION,
                                  base_model=fingerprint(model, tokenizer, name))
        except ValidationError as exc:
            raise ArtifactError(f"Invalid P-Token settings: {exc}") from exc
        table = model.get_input_embeddings().weight.detach().float()
        if init == "text":
            ids = tokenizer(init_text, add_special_tokens=False,
                            split_special_tokens=True).input_ids
            if not ids:
                raise ArtifactError(f"init_text={init_text!r} produced no tokens")
            src = table[torch.tensor(ids, device=table.device)]
            rows = src[torch.arange(2 * m, device=table.device) % len(ids)]
        elif init == "vocab_mean":
            rows = table.mean(0, keepdim=True).expand(2 * m, -1)
        else:
            gen = torch.Generator().manual_seed(seed)
            noise = torch.randn(2 * m, table.shape[1], generator=gen).to(table.device)
            rows = table.mean(0) + noise * table.std(0)
        return cls(config, rows.cpu().clone(), model)

    # ---- artifact -------------------------------------------------------------------------
    def content_hash(self) -> str:
        """SHA-256 (16 hex) of the rows as `save_pretrained` stores them (in `config.dtype`):
        names this set by its content, wherever its directory lives; a set and its saved or
        reloaded copy hash the same."""
        rows = self.layer.weight.detach().to("cpu", getattr(torch, self.config.dtype))
        digest = hashlib.sha256(f"{self.config.dtype} {tuple(rows.shape)}\n".encode())
        digest.update(rows.contiguous().view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()[:16]

    def save_pretrained(self, directory: str | os.PathLike[str]) -> Path:
        """Write config JSON + safetensors (2m rows only). Files are replaced atomically."""
        from safetensors.torch import save_file

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        dtype = getattr(torch, self.config.dtype)
        tensors = {WEIGHTS_KEY: self.layer.weight.detach().to("cpu", dtype).contiguous()}
        meta = {"format": "pt", "editkit": "ptokens", "m": str(self.m)}
        atomic_write(out / WEIGHTS_NAME, lambda p: save_file(tensors, str(p), metadata=meta))
        atomic_write(out / CONFIG_NAME,
                      lambda p: p.write_text(self.config.model_dump_json(indent=2) + "\n"))
        return out

    @classmethod
    def from_pretrained(
        cls, directory: str | os.PathLike[str], model: Any, tokenizer: Any, *, name: str
    ) -> PTokens:
        """Load a saved set, refusing one made for a different base model or a damaged one."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        src = Path(directory)
        cfg_path, w_path = src / CONFIG_NAME, src / WEIGHTS_NAME
        if not cfg_path.is_file() or not w_path.is_file():
            raise ArtifactError(f"{src} is not a P-Token directory: expected {CONFIG_NAME} and "
                                f"{WEIGHTS_NAME} in it.")
        try:
            config = PTokenConfig.model_validate(json.loads(cfg_path.read_text()))
        except (ValueError, ValidationError) as exc:
            raise ArtifactError(f"{cfg_path} is not a valid P-Token config: {exc}") from exc
        problem = config.layout_problem()
        if problem is not None:
            raise PTokenMismatchError(f"P-Tokens in {src} cannot be used: {problem}")
        here: BaseModelFingerprint = fingerprint(model, tokenizer, name)
        if not config.base_model.same_base(here):
            raise PTokenMismatchError(
                f"P-Tokens in {src} were trained for {config.base_model.short()} but the loaded "
                f"model is {here.short()}. Train P-Tokens for this model (`editkit train`) or load "
                "the model they were made for.")
        try:
            tensors = load_file(str(w_path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise ArtifactError(f"{w_path} is truncated or corrupted: {exc}") from exc
        if set(tensors) != {WEIGHTS_KEY}:
            raise ArtifactError(f"{w_path} holds tensors {sorted(tensors)}, expected "
                                f"['{WEIGHTS_KEY}'].")
        return cls(config, tensors[WEIGHTS_KEY], model)
