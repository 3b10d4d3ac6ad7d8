"""The teacher's distributions as stored: the cache format, its key, and the top-k reduction.

The teacher never changes during a run, so its next-token distributions are computed once per
pair and kept on disk under $EDITKIT_CACHE/teacher/ (top-k log-probs per answer position, the log
of the remaining mass, and the unedited model's answer margin). Epochs then run only the short
student sequences. The key is derived, not hand-listed: it hashes everything those
distributions depend on (the model, the pairs, the TEACHER_FIELDS, the demonstrations, the
layout), so a stale cache is never read; a change to what the cache holds bumps CACHE_FORMAT.

Which prompt the teacher reads for each pair, and the forward passes that fill the cache, are
`Trainer.teacher` in loop.py: it calls `teacher_cache_key`, `TeacherCache.load`/`save`,
`topk_with_rest`, and `_scatter` (data parallel: one shard's cache indexed like all pairs).
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..embedder import DEFAULT_EMBEDDER
from ..fileio import atomic_write
from ..ike import DEMO_SCHEDULE_VERSION
from ..layouts import LAYOUT_VERSION
from .config import TEACHER_FIELDS, TrainConfig
from .pairs import Pair

CACHE_FORMAT = 2  # 2: the teacher cache also holds the unedited model's answer margin per pair


def file_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def teacher_cache_key(cfg: TrainConfig, pairs: Sequence[Pair], *, base_model: str,
                      demos_digest: str, embedder: str = DEFAULT_EMBEDDER,
                      layout_version: int = LAYOUT_VERSION) -> str:
    """The teacher cache's name: a hash of everything the teacher's distributions depend on.

    base_model: the fingerprint (JSON) of the model; pairs: the questions, answers and contexts;
    the TEACHER_FIELDS of `cfg`; the demonstration file's content digest and the embedder that
    retrieves from it (the IKE teacher's demonstrations) and how it orders their kinds; the prompt
    layout version.
    """
    h = hashlib.sha256()
    parts = {"base_model": base_model, "pairs": [p.model_dump() for p in pairs],
             "teacher": cfg.model_dump(mode="json", include=set(TEACHER_FIELDS)),
             "demos": demos_digest, "embedder": embedder, "layout": layout_version,
             "demo_schedule": DEMO_SCHEDULE_VERSION, "format": CACHE_FORMAT}
    h.update(json.dumps(parts, sort_keys=True).encode())
    return h.hexdigest()[:20]


class TeacherCache:
    """Top-k teacher log-probs per pair and answer position, plus the log of the remaining mass,
    and the unedited model's answer margin (NaN where the pair has none, see `margin_loss`)."""

    def __init__(self, values: list[torch.Tensor], indices: list[torch.Tensor],
                 rest: list[torch.Tensor], margins: list[torch.Tensor]) -> None:
        self.values, self.indices, self.rest, self.margins = values, indices, rest, margins

    def save(self, path: Path) -> None:
        from safetensors.torch import save_file

        tensors = {}
        for i, (v, ix, r, m) in enumerate(zip(self.values, self.indices, self.rest,
                                              self.margins)):
            tensors[f"{i}.v"], tensors[f"{i}.i"], tensors[f"{i}.r"] = v, ix.to(torch.int32), r
            tensors[f"{i}.m"] = m.reshape(1)
        atomic_write(path, lambda p: save_file(tensors, str(p)))

    @classmethod
    def load(cls, path: Path, n: int) -> TeacherCache | None:
        from safetensors.torch import load_file

        try:
            t = load_file(str(path))
        except Exception:  # noqa: BLE001 - a damaged cache is simply recomputed
            return None
        if len(t) != 4 * n:
            return None
        return cls([t[f"{i}.v"] for i in range(n)], [t[f"{i}.i"].long() for i in range(n)],
                   [t[f"{i}.r"] for i in range(n)], [t[f"{i}.m"][0] for i in range(n)])

    def to(self, device: torch.device | str) -> TeacherCache:
        """The same cache on `device`. A cache read from disk is on the CPU, and the loss
        gathers the student's log-probs with its indices, so it must sit where the model runs."""
        return TeacherCache([v.to(device) for v in self.values],
                            [ix.to(device) for ix in self.indices],
                            [r.to(device) for r in self.rest], [m.to(device) for m in self.margins])


def topk_with_rest(logp: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(values, indices, log remaining mass) of a (T, V) log-distribution."""
    v, ix = logp.topk(min(k, logp.shape[-1]), dim=-1)
    rest = torch.log1p(-v.exp().sum(-1).clamp(max=1 - 1e-6))
    return v, ix, rest


def _scatter(local: TeacherCache, positions: Sequence[int], n: int) -> TeacherCache:
    """A cache indexed like all n pairs, holding entries only at `positions` (this shard's)."""
    full: list[list[Any]] = [[None] * n for _ in range(4)]
    for j, i in enumerate(positions):
        full[0][i], full[1][i], full[2][i] = local.values[j], local.indices[j], local.rest[j]
        full[3][i] = local.margins[j]
    return TeacherCache(*full)
