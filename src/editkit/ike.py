"""IKE demonstration store: for a new fact, the 32 most similar training edits as demonstrations.

As in original IKE (Zheng et al. 2023, `icl.py`): keys are `New Fact: {prompt} {target_new}`
embedded with all-MiniLM-L6-v2; the 32 nearest are turned into copy / update / retain
demonstrations by a shuffled list of 4 / 12 / 16 kinds, **shuffled anew for every evaluated fact**
(IKE calls `random.shuffle` per test record; here the shuffle is seeded by the fact text, so it is
reproducible and the same for the SDK and evaluation), and the list is reversed so the most similar
demonstration sits right before the query.

Variants (docs/metrics.md, audit D-2): by default there is no demonstration of the evaluated fact
itself, as in EasyEdit since 2024-12 (commit f0dec47); `self_copy=True` appends IKE's copy of the
fact (`New Fact: f / Prompt: f`) after the 32, as original IKE and earlier EasyEdit did.
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


DEMO_SCHEDULE_VERSION = 2
"""How demonstration kinds are laid out: 1 = one fixed shuffle for every fact; 2 = shuffled per
fact (seeded by it), as original IKE does. Part of the teacher-cache key (train/teacher.py)."""


def kind_schedule(k: int, seed: int | str = 0) -> list[str]:
    """The demonstration kinds for one query: 4/12/16 copy/update/retain out of 32 (scaled for
    other k), shuffled with `seed`. `DemoStore.retrieve` seeds it with the query's fact, so every
    record gets its own order, as IKE's per-record `random.shuffle` does."""
    total = sum(KIND_COUNTS.values())
    kinds = [kind for kind, n in KIND_COUNTS.items() for _ in range(round(n * k / total))]
    kinds = (kinds + ["retain"] * k)[:k]
    random.Random(seed).shuffle(kinds)
    return kinds


@dataclass
class Demonstrations:
    """The demonstration text and the training records it came from (most similar last);
    `self_copy` says whether a copy demonstration of the queried fact itself closes the text."""

    text: str
    case_ids: list[int]
    self_copy: bool = False

    @property
    def count(self) -> int:
        """Number of demonstrations in `text` (the retrieved ones plus the self-copy)."""
        return len(self.case_ids) + int(self.self_copy)


def self_copy_demo(fact: str) -> str:
    """IKE's demonstration of the evaluated fact itself (`icl.py`: `New Fact: f\nPrompt: f`): the
    copy template with the fact's last word as the object, which writes the whole fact twice."""
    prompt, _, target = fact.rpartition(" ")
    return demo_text(CounterFactRecord.model_construct(prompt=prompt, target_new=target), "copy")


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
        # Like EasyEdit's ZsreDataset, leave out zsRE records without a new answer (`alt == ""`):
        # they would make demonstrations with an empty object (audit D-8).
        records = [r.as_counterfact() if isinstance(r, ZsreRecord) else r for r in raw
                   if not (isinstance(r, ZsreRecord) and not r.alt.strip())]
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
                 exclude_prompts: Iterable[str] = (), seed: int | str | None = None,
                 self_copy: bool = False) -> Demonstrations:
        """Demonstrations for `fact`.

        exclude: case_ids never used (the evaluated record's, for CounterFact, whose ids are
        global). exclude_prompts: training records whose prompt is one of these are never used
        (zsRE, whose ids are positions in each file, excludes the evaluated question this way).
        seed: the kind shuffle's seed; None (default) seeds it with `fact`, a new order per
        record. self_copy: append IKE's copy demonstration of `fact` itself (33 in all).
        """
        q = self.embedder.encode([ike_key(fact)])[0]
        sims = self.keys @ q
        banned, banned_prompts = set(exclude), set(exclude_prompts)
        order = [int(i) for i in np.argsort(-sims, kind="stable")
                 if self.records[int(i)].case_id not in banned
                 and self.records[int(i)].prompt not in banned_prompts][:k]
        kinds = kind_schedule(len(order), fact if seed is None else seed)
        chosen = [(self.records[i], kind) for i, kind in zip(order, kinds, strict=True)]
        chosen.reverse()  # most similar last, right before the query
        text = "".join(demo_text(r, kind) for r, kind in chosen)
        if self_copy:
            text += self_copy_demo(fact)
        return Demonstrations(text=text, case_ids=[r.case_id for r, _ in chosen],
                              self_copy=self_copy)


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
