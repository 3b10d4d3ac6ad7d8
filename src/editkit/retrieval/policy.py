"""The retrieval policy: which stored edit (if any) a question is about, and which go along.

Every path that puts stored edits into a prompt asks this module: `EditableLM.prompt/ask/score`,
evaluation's memory setting, MQuAKE (single shot and hop by hop) and the LangChain retriever and
RAG chain. It turns (question, memory) into a `Selection`: the edit placed as the fact, the others
placed as distractors, or nothing. Its settings and defaults are `settings.py`'s.

The policy, step by step:
1. **Candidates.** The question is matched by each of its views (`gate.question_views`: the
   whole question, and its last sentence when an unrelated sentence comes first); each view
   retrieves up to `candidates` edits above the candidate cosine threshold, and an edit's score
   is its best cosine over the views.
2. **Relevance.** `gate="learned"` (default) keeps a candidate only if the judge (the relevance
   gate of `gate.py`, trained per embedder and shipped, or the settings' own `Judge`) finds it to
   be about the question's subject; `gate="threshold"` keeps every candidate above the cosine
   threshold (the policy before the gate existed). A caller's `accept` check (the fact policy
   of `editkit.safety`) drops or refuses candidates that must never reach a prompt.
3. **Placement.** The most relevant kept edit is the fact; up to `top_k - 1` further kept edits
   are distractors. With the learned gate those are other edits about the same subject; edits
   that are merely similar stay out of the prompt, where they would only cost tokens and move
   answers about other subjects.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import ArtifactError
from ..records import RetrievedEdit
from .gate import Candidate, Judge, load_gate, question_views, shipped_gate
from .settings import DEFAULT_GATE, RetrievalSettings

log = logging.getLogger(__name__)


@dataclass
class Judged:
    """A candidate and the policy's verdict on it (kept for evaluation and debugging)."""

    hit: RetrievedEdit
    relevance: float | None  # the learned gate's probability; None under the threshold gate
    kept: bool


@dataclass
class Selection:
    """What the policy placed for one question: the fact (or None) and the distractors, plus
    every candidate it considered with its verdict."""

    edit: RetrievedEdit | None = None
    distractors: list[RetrievedEdit] = field(default_factory=list)
    judged: list[Judged] = field(default_factory=list)
    gate: str = DEFAULT_GATE

    @property
    def fact(self) -> str | None:
        return self.edit.edit.text if self.edit is not None else None

    @property
    def distractor_texts(self) -> list[str]:
        return [d.edit.text for d in self.distractors]

    def explain(self) -> str:
        """One line on the decision, for people (`editkit ask`): the edit placed, or why none
        was: no stored edit close enough to be a candidate, or the gate's verdict on the
        closest one."""
        if self.edit is not None:
            return (f"edit used: {self.edit.edit.text!r} (id {self.edit.edit.id}, similarity "
                    f"{self.edit.score:.2f})")
        if not self.judged:
            return ("no edit applied: no stored edit is similar enough to the question to be "
                    "a candidate")
        best = max(self.judged, key=lambda j: j.hit.score)
        verdict = ("the relevance gate judged it to be about something else"
                   + (f" (p = {best.relevance:.2f})" if best.relevance is not None else "")
                   if self.gate == "learned" else "it is below the similarity threshold")
        return (f"no edit applied: the closest stored edit, {best.hit.edit.text!r} "
                f"(similarity {best.hit.score:.2f}), was left out: {verdict}")


_warned: set[str] = set()


def gate_for(embedder: Any, settings: RetrievalSettings) -> Judge | None:
    """The relevance judge for an embedder (a memory's): the settings' own `judge`, a
    `gate_file`, or the gate shipped for the embedder; None for the threshold gate.

    An embedder without a shipped gate falls back to the threshold gate, with one warning per
    embedder and process: the gate's features include that embedder's cosine.
    """
    if settings.gate != "learned":
        return None
    if settings.judge is not None:
        return settings.judge
    name = getattr(embedder, "name", None)
    if settings.gate_file is not None:
        gate = load_gate(settings.gate_file)
        if name is not None and gate.artifact.embedder != name:
            raise ArtifactError(f"The relevance gate {settings.gate_file} was trained for the "
                                f"embedder {gate.artifact.embedder!r}, this memory embeds with "
                                f"{name!r}: its cosine feature would mean something else.")
        return gate
    gate = shipped_gate(name) if isinstance(name, str) else None
    if gate is None and str(name) not in _warned:
        _warned.add(str(name))
        log.warning("No relevance gate ships for the embedder %r; using the cosine threshold "
                    "(%.2f) alone. Train one with editkit.train.gate.train_gate.", name,
                    settings.threshold)
    return gate


def _verdicts(gate: Judge | None, settings: RetrievalSettings, question: str,
              scored: list[tuple[str, float]]) -> list[tuple[float | None, bool]]:
    """(relevance, kept) per (text, cosine): the gate's probability against its cut-off, or,
    without a gate, the cosine against the threshold."""
    if gate is None:
        return [(None, cos >= settings.threshold) for _, cos in scored]
    cut = gate.threshold if settings.gate_threshold is None else settings.gate_threshold
    probs = gate.probabilities(question, [Candidate(t, c) for t, c in scored])
    return [(p, p >= cut) for p in probs]


def candidates(memory: Any, question: str, settings: RetrievalSettings, *,
               namespace: str | None = None, threshold: float | None = None,
               as_of: Any = None) -> list[RetrievedEdit]:
    """Edits retrieved by any view of the question, each with its best cosine, best first;
    only live edits (superseded ones are history), or those live at `as_of`."""
    ns = settings.namespace if namespace is None else namespace
    th = settings.threshold if threshold is None else threshold
    views = question_views(question)
    when = {} if as_of is None else {"as_of": as_of}  # stores without history still work
    if hasattr(memory, "retrieve_vector") and len(views) > 1:
        # EditMemory: embed every view in one batch, then search with each vector
        vecs = memory.embedder.encode(views)
        found = [memory.retrieve_vector(v, k=settings.candidates, threshold=th, namespace=ns,
                                        **when) for v in vecs]
    else:
        found = [memory.retrieve(v, k=settings.candidates, threshold=th, namespace=ns, **when)
                 for v in views]
    best: dict[str, RetrievedEdit] = {}
    for hit in (h for hits in found for h in hits):
        if hit.edit.id not in best or hit.score > best[hit.edit.id].score:
            best[hit.edit.id] = hit
    return sorted(best.values(), key=lambda h: -h.score)[: settings.candidates]


def select(memory: Any, question: str, settings: RetrievalSettings, *,
           namespace: str | None = None, k: int | None = None,
           accept: Callable[[RetrievedEdit], bool] | None = None,
           gate: Judge | None | Literal["auto"] = "auto", as_of: Any = None) -> Selection:
    """Retrieve candidates for `question`, judge them, and split the kept ones into fact and
    distractors (see the module docstring).

    memory: any `EditStore` (`retrieval.store`). namespace / k override the settings' namespace and
    top_k for this call (evaluation asks for 1 + its number of distractors). accept: returns
    False for a candidate that must be left out (it may raise instead, to refuse the question).
    gate: "auto" picks the judge from the settings and the memory's embedder. as_of: choose
    among the edits live at that time (a datetime or epoch seconds) instead of the live ones.
    """
    top_k = settings.top_k if k is None else k
    g = gate_for(getattr(memory, "embedder", None), settings) if gate == "auto" else gate
    threshold = settings.threshold
    if g is not None:  # the gate judges candidates from its own (lower) cosine cut-off
        threshold = min(threshold, g.candidate_threshold)
    hits = candidates(memory, question, settings, namespace=namespace, threshold=threshold,
                      as_of=as_of)
    if accept is not None:
        hits = [h for h in hits if accept(h)]
    verdicts = _verdicts(g, settings, question, [(h.edit.text, h.score) for h in hits])
    judged = [Judged(h, p, kept) for h, (p, kept) in zip(hits, verdicts)]
    if g is not None:  # most relevant first (the threshold gate keeps the cosine order)
        judged.sort(key=lambda j: -(j.relevance or 0.0))
    kept = [j.hit for j in judged if j.kept][:top_k]
    name = "threshold" if g is None else "learned"
    if not kept:
        return Selection(judged=judged, gate=name)
    return Selection(kept[0], kept[1:], judged=judged, gate=name)


def judge_texts(question: str, texts: list[str], embedder: Any, settings: RetrievalSettings
                ) -> list[tuple[str, float, float | None, bool]]:
    """The policy's verdict on texts that come from elsewhere (e.g. a LangChain retriever over a
    corpus): (text, best cosine over the question's views, relevance, kept), in the given order.

    Same decision as `select` for stored edits: the learned gate where one ships for the
    embedder, else the cosine threshold.
    """
    if not texts:
        return []
    views = question_views(question)
    vecs = embedder.encode([*views, *texts])
    cos = (vecs[len(views):] @ vecs[: len(views)].T).max(axis=1).tolist()
    verdicts = _verdicts(gate_for(embedder, settings), settings, question, list(zip(texts, cos)))
    return [(t, c, p, kept) for t, c, (p, kept) in zip(texts, cos, verdicts)]
