"""IKE demonstration store: for a new fact, the 32 most similar training edits as demonstrations.

As in original IKE (Zheng et al. 2023): keys are `New Fact: {prompt} {target_new}` embedded with
all-MiniLM-L6-v2; the 32 nearest are turned into copy / update / retain demonstrations following a
fixed shuffled list of 4 / 12 / 16 kinds, and the list is reversed so the most similar demonstration
sits right before the query.
"""
from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from .datasets import CounterFactRecord, ZsreRecord, load_records
from .embedder import Embedder, shared_embedder
from .errors import DatasetError
from .fileio import atomic_write, cache_dir
from .layouts import ike_demo_text, ike_key

DEFAULT_K = 32
KIND_COUNTS = {"copy": 4, "update": 12, "retain": 16}


def default_train_file(kind: str = "counterfact") -> Path:
    """A training split vendored in the package (see editkit/data/PROVENANCE.md)."""
    if kind not in ("counterfact", "zsre"):
        raise DatasetError(f"No vendored demonstration file for {kind!r}; use counterfact or zsre.")
    return Path(str(resources.files("editkit.data") / f"{kind}-train.json"))


def demo_text(record: CounterFactRecord, kind: str) -> str:
    """One demonstration in IKE's format."""
    if kind == "copy":
        return ike_demo_text(record.fact, record.prompt, record.target_new)
    if kind == "update":
        return ike_demo_text(record.fact, record.rephrase_prompt, record.target_new)
    if kind == "retain":
        return ike_demo_text(record.fact, record.locality_prompt, record.locality_ground_truth)
    raise ValueError(f"unknown demonstration kind {kind!r}")


def kind_schedule(k: int, seed: int = 0) -> list[str]:
    """The fixed shuffled list of demonstration kinds (4/12/16 out of 32, scaled for other k)."""
    total = sum(KIND_COUNTS.values())
    kinds = [kind for kind, n in KIND_COUNTS.items() for _ in range(round(n * k / total))]
    kinds = (kinds + ["retain"] * k)[:k]
    random.Random(seed).shuffle(kinds)
    return kinds


@dataclass
class Demonstrations:
    text: str
    case_ids: list[int]


class DemoStore:
    """Training records plus their key embeddings (computed once, cached on disk by file hash)."""

    def __init__(self, records: list[CounterFactRecord], keys: np.ndarray,
                 embedder: Embedder) -> None:
        self.records = records
        self.keys = keys
        self.embedder = embedder

    @classmethod
    def from_file(cls, path: str | os.PathLike[str],
                  embedder: Embedder | None = None) -> DemoStore:
        """Build from an EasyEdit CounterFact or a zsRE training file."""
        embedder = embedder or shared_embedder()
        fmt, raw = load_records(path)
        if fmt not in ("counterfact", "zsre"):
            raise DatasetError(f"{path}: IKE demonstrations need a CounterFact (EasyEdit) or zsRE "
                               f"training file, not {fmt}.")
        records = [r.as_counterfact() if isinstance(r, ZsreRecord) else r for r in raw]
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
        name = hashlib.sha256(embedder.name.encode()).hexdigest()[:8]
        cached = cache_dir() / "ike" / f"keys-{digest}-{name}.npy"
        keys = _load_keys(cached, len(records), embedder.dim)
        if keys is None:
            keys = embedder.encode([ike_key(r.fact) for r in records])
            _save_keys(cached, keys)
        return cls(records, keys, embedder)

    @classmethod
    def default(cls, kind: str = "counterfact") -> DemoStore:
        return cls.from_file(default_train_file(kind))

    def retrieve(self, fact: str, k: int = DEFAULT_K, *, exclude: Iterable[int] = (),
                 seed: int = 0) -> Demonstrations:
        """Demonstrations for `fact`, never from records whose case_id is in `exclude`."""
        q = self.embedder.encode([ike_key(fact)])[0]
        sims = self.keys @ q
        banned = set(exclude)
        order = [int(i) for i in np.argsort(-sims, kind="stable")
                 if self.records[int(i)].case_id not in banned][:k]
        kinds = kind_schedule(len(order), seed)
        chosen = [(self.records[i], kind) for i, kind in zip(order, kinds)]
        chosen.reverse()  # most similar last, right before the query
        return Demonstrations(text="".join(demo_text(r, kind) for r, kind in chosen),
                              case_ids=[r.case_id for r, _ in chosen])


def _load_keys(path: Path, n: int, dim: int) -> np.ndarray | None:
    try:
        keys = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    return keys if keys.shape == (n, dim) else None


def _save_keys(path: Path, keys: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with tmp.open("wb") as f:  # a file object: np.save(path) would append ".npy"
            np.save(f, keys)

    atomic_write(path, write)
