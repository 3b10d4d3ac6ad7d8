"""The "same slot" judge: does a new fact give a value for what an older one says?

When a user stores "Our warehouse in Ghent ships orders within 5 days." after "... within 2
days.", the newer edit supersedes the older. With an explicit key or subject+relation that is
decided elsewhere; for two plain-text facts this judge gives P(same subject AND same relation).
A wrong "yes" retires a true fact, so the shipped threshold is set for precision: at most 0.2% of
each validation set's negatives (neighbour subjects with the same relation, sibling entities,
nearest other facts, same subject with another relation), and at most 0.5% of any one kind of
them, pass it.

Cosine cannot tell an update from a neighbour ("Toko Yasuda plays the guitar" sits as close to
"John Lennon plays the guitar" as to "Toko Yasuda plays the piano"). *Where* the two texts
differ can: a word-level diff (difflib over the relevance gate's `words`) gives the share of equal
words, the number of differing blocks, where the difference starts and ends, and, with the
gate's inverse document frequencies, whether the rare words (usually the subject) are on the
shared side or the differing side; values that are numbers ("2 days" / "5 days") and model names
with digits ("X2" / "X3") get their own features. A logistic regression over them
(`editkit.train.slot`) gives the probability. The IDF is read from the shipped relevance gate of
the same embedder; the artifact records a digest of it, and a judge refuses a gate whose IDF
differs from the one it was trained with.

What it cannot do: tell a reworded update ("Toko Yasuda is incredible at piano" after "Toko
Yasuda, the guitar") from a statement of the subject's other relation; both share the subject
and differ in the rest, so at this threshold it takes neither (reported, not trained on). Nor a
value stated before its subject ("Dr. Lena Vos heads the Ghent clinic." after "Dr. Amara Okafor
heads ..."), which reads like a neighbour subject with the same relation.

`SlotJudge` is the interface; `LearnedSlotJudge` the shipped one (`shipped_slot_judge`).
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
from collections.abc import Sequence
from difflib import SequenceMatcher
from importlib import resources
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import ArtifactError
from ..fileio import atomic_write
from .gate import RelevanceGate, shipped_gate, words

SLOT_FORMAT = "editkit-slot-judge/1"
_NUMBER = re.compile(r"\d+")
_DIGIT = re.compile(r"\d")
# Words rarer than this share of the largest IDF are names and values; commoner ones are mostly
# the wording of the relation ("is", "in", "located", "plays"), which an update leaves as it is.
_COMMON = 0.45

FEATURE_NAMES = (
    "cosine", "equal_share", "diff_blocks", "first_diff", "last_diff", "starts_same",
    "ends_same", "shared_max_idf", "diff_max_idf", "diff_mass_share", "rarest_shared",
    "top2_shared", "diff_numeric", "diff_has_digit", "numeric_x_first_diff", "max_diff_len",
    "cosine_x_equal_share", "pure_inserts", "diff_min_idf", "diff_common_words",
    "head_max_idf", "tail_max_idf", "tail_numeric", "bias",
)


@runtime_checkable
class SlotJudge(Protocol):
    """P(the new fact states a value for the same slot as each older fact): same subject and
    same relation. `olds` are (older fact text, cosine between the two facts' embeddings);
    an older fact at or above `threshold` is superseded by the new one."""

    threshold: float

    def probabilities(self, new: str, olds: Sequence[tuple[str, float]]) -> list[float]: ...


class SlotJudgeArtifact(BaseModel):
    """The saved judge: weights over FEATURE_NAMES, threshold, the IDF it used, provenance."""

    model_config = ConfigDict(extra="forbid")
    format: str = SLOT_FORMAT
    embedder: str
    features: list[str]
    weights: list[float]
    threshold: float = Field(ge=0.0, le=1.0)
    idf_sha256: str = Field(description="digest of the relevance gate's document frequencies")
    provenance: dict[str, Any] = {}


def idf_digest(gate: RelevanceGate) -> str:
    """What pins the IDF table a judge was trained with (the gate's n_docs and doc_freq)."""
    payload = json.dumps([gate.artifact.n_docs, gate.artifact.doc_freq], sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class LearnedSlotJudge:
    """Logistic regression over word-diff and IDF features (see module doc); the shipped
    `SlotJudge`. `idf` is the relevance gate whose IDF it reads (default: the shipped gate of
    the artifact's embedder)."""

    def __init__(self, artifact: SlotJudgeArtifact, idf: RelevanceGate | None = None) -> None:
        if artifact.format != SLOT_FORMAT:
            raise ArtifactError(f"Slot judge format {artifact.format!r} is not {SLOT_FORMAT!r}; "
                                "retrain it with this editkit version.")
        if list(artifact.features) != list(FEATURE_NAMES) or \
                len(artifact.weights) != len(FEATURE_NAMES):
            raise ArtifactError("The slot judge was trained on other features than this editkit "
                                "version computes; retrain it (editkit.train.slot).")
        gate = idf if idf is not None else shipped_gate(artifact.embedder)
        if gate is None:
            raise ArtifactError(f"The slot judge reads the IDF of the relevance gate for "
                                f"{artifact.embedder!r}, and none ships; pass one (idf=...).")
        if idf_digest(gate) != artifact.idf_sha256:
            raise ArtifactError("The slot judge was trained with another relevance gate's IDF "
                                "than the one given; retrain it (scripts/train_slot_judge.py).")
        self.artifact = artifact
        self.gate = gate
        self.weights = np.asarray(artifact.weights, dtype=np.float64)
        self.threshold = artifact.threshold
        self._max_idf = math.log(gate.artifact.n_docs + 1)

    def features(self, new: str, old: str, cosine: float) -> list[float]:
        """The feature vector (FEATURE_NAMES order) of one (new fact, older fact) pair."""
        idf, mx = self.gate.idf, self._max_idf
        a, b = words(new), words(old)
        if not a or not b:
            return [float(cosine), *[0.0] * (len(FEATURE_NAMES) - 2), 1.0]
        ops = SequenceMatcher(None, a, b, autojunk=False).get_opcodes()
        diffs = [op for op in ops if op[0] != "equal"]
        shared = [w for op in ops if op[0] == "equal" for w in a[op[1]:op[2]]]
        da = [w for op in diffs for w in a[op[1]:op[2]]]
        db = [w for op in diffs for w in b[op[3]:op[4]]]
        differing = da + db
        # the shared words before the first difference (the subject, in most facts) and after
        # the last one (the value, when two facts differ in the subject)
        head = a[:ops[0][2]] if ops[0][0] == "equal" else []
        tail = a[ops[-1][1]:] if ops[-1][0] == "equal" else []
        if diffs:
            first = (diffs[0][1] / len(a) + diffs[0][3] / len(b)) / 2
            last = (diffs[-1][2] / len(a) + diffs[-1][4] / len(b)) / 2
        else:
            first = last = 1.0
        mass = sum(idf(w) for w in a + b) or 1.0
        rarest = {max(a, key=idf), max(b, key=idf)}
        top2 = sorted(set(a), key=idf)[-2:] + sorted(set(b), key=idf)[-2:]
        shared_set = set(shared)
        numeric = float(bool(da) and bool(db) and all(_NUMBER.fullmatch(w) for w in differing))
        equal = 2 * len(shared) / (len(a) + len(b))
        return [
            float(cosine), equal, min(len(diffs), 3) / 3, first, last,
            float(ops[0][0] == "equal"), float(ops[-1][0] == "equal"),
            max((idf(w) for w in shared), default=0.0) / mx,
            max((idf(w) for w in differing), default=0.0) / mx,
            sum(idf(w) for w in differing) / mass,
            sum(w in shared_set for w in rarest) / len(rarest),
            sum(w in shared_set for w in top2) / len(top2),
            numeric, float(any(_DIGIT.search(w) for w in differing)), numeric * first,
            min(max((max(op[2] - op[1], op[4] - op[3]) for op in diffs), default=0), 6) / 6,
            float(cosine) * equal,
            min(sum(op[0] in ("insert", "delete") for op in diffs), 2) / 2,
            min((idf(w) for w in differing), default=mx) / mx,
            min(sum(idf(w) < _COMMON * mx for w in differing), 4) / 4,
            max((idf(w) for w in head), default=0.0) / mx,
            max((idf(w) for w in tail), default=0.0) / mx,
            float(any(_NUMBER.fullmatch(w) for w in tail)), 1.0,
        ]

    def probabilities(self, new: str, olds: Sequence[tuple[str, float]]) -> list[float]:
        """P(same slot) for each (older fact, cosine)."""
        if not olds:
            return []
        x = np.asarray([self.features(new, text, cos) for text, cos in olds])
        return (1.0 / (1.0 + np.exp(-(x @ self.weights)))).tolist()

    # ---- artifact -----------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> Path:
        text = self.artifact.model_dump_json(indent=1)
        return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))

    @classmethod
    def load(cls, path: str | os.PathLike[str],
             idf: RelevanceGate | None = None) -> LearnedSlotJudge:
        p = Path(path)
        try:
            raw = json.loads(p.read_text(encoding="utf-8"))
            return cls(SlotJudgeArtifact(**raw), idf)
        except FileNotFoundError:
            raise ArtifactError(f"No slot judge at {p}.") from None
        except (json.JSONDecodeError, UnicodeDecodeError, ValidationError, TypeError) as exc:
            raise ArtifactError(f"{p} is not a valid slot judge: {exc}") from None


def shipped_slot_judge_path(embedder: str) -> Path | None:
    """The slot judge trained for an embedder and shipped inside the package, if any."""
    path = Path(str(resources.files("editkit.data") / "gate" / embedder / "slot.json"))
    return path if path.is_file() else None


@functools.lru_cache(maxsize=8)
def shipped_slot_judge(embedder_name: str) -> LearnedSlotJudge | None:
    """The shipped slot judge for `embedder_name`, or None where none ships; loaded once per
    process and embedder (every edit asks)."""
    path = shipped_slot_judge_path(embedder_name)
    return LearnedSlotJudge.load(path) if path is not None else None
