"""Validation on generated answers (`TrainConfig.select_by = "val_wild"`): pick the P-Tokens by
what users read, not by a teacher-forced score.

The validation KL and ROME's S compare probabilities at the target's position; the wild task
(`eval/tasks/wild.py`) showed that tokens which look better there can answer worse when the model
answers freely. With `val_wild`, each validation also generates the student's greedy answers to
the validation records' chat questions, laid out as `ask` lays them out (P-Token layout, chat
template, the record's own fact given, `answer_tokens` at most) and judges them as the wild task
does (`eval.matching`):

- `wild_edit`, `wild_paraphrase`: share of edit / paraphrase answers that contain the new object;
- `wild_unchanged`: share of neighbour answers (the fact given, a question or sentence about
  another subject, in its own layout) equal, after normalisation, to the unedited model's answer
  (generated once per run);
- `wild`: their harmonic mean (as ROME's S combines ES/PS/NS: a collapse of locality cannot be
  bought with efficacy), the selection key.

Edit and paraphrase questions are asked only where they are chat pairs (the questions
`chat_questions` lays out in the template: zsRE's here); CounterFact's sentences to complete stay
scored by S. Neighbour pairs are all asked, inline ones inline (zsRE's neighbour is an "nq
question:" line, which reads as no question): locality is what the tokens can break. Each answer
ends where `ask` ends it (`targets.generate`, which also makes the teacher's replies). The fact
is given rather than retrieved: retrieval does not depend on the tokens.
Called by `Trainer.validate_and_keep` (loop.py).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..eval.matching import matches, normalize
from ..layouts import Mode
from .pairs import Pair
from .targets import generate

WILD_KINDS = ("edit", "paraphrase", "neighbour")


def wild_pairs(gold: Sequence[Pair]) -> list[Pair]:
    """The validation pairs asked freely: chat edit and paraphrase pairs, and every neighbour
    pair, with their gold answers (`answers="generated"` replaces the training targets, not
    these)."""
    return [p for p in gold if p.kind in WILD_KINDS and p.fact is not None
            and (p.chat or p.kind == "neighbour")]


def wild_scores(pairs: Sequence[Pair], answers: Sequence[str], unedited: dict[str, str]
                ) -> dict[str, float]:
    """The wild validation scores (in %) from the student's answers to `pairs`; `unedited` maps a
    neighbour question to the unedited model's answer."""
    hits: dict[str, list[float]] = {k: [] for k in WILD_KINDS}
    for p, a in zip(pairs, answers, strict=True):
        if p.kind == "neighbour":
            hits[p.kind].append(float(normalize(a) == normalize(unedited[p.question])))
        else:
            hits[p.kind].append(float(matches(a, [p.answer])))
    names = {"edit": "wild_edit", "paraphrase": "wild_paraphrase", "neighbour": "wild_unchanged"}
    out = {names[k]: 100 * sum(v) / len(v) for k, v in hits.items() if v}
    parts = list(out.values())  # the kinds asked (a set without chat neighbours has none)
    out["wild"] = (len(parts) / sum(1 / x for x in parts)) if all(parts) else 0.0
    return out


class WildValidation:
    """The generated-answer validation of one training run (the unedited answers made once)."""

    def __init__(self, model: Any, tokenizer: Any, gold_val_pairs: Sequence[Pair],
                 max_new_tokens: int) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.pairs = wild_pairs(gold_val_pairs)
        self.max_new_tokens = max_new_tokens
        self._unedited: dict[str, str] | None = None

    def scores(self, pt: Any) -> dict[str, float]:
        """Generate the student's answers and judge them; {} when no pair is asked freely."""
        if not self.pairs:
            return {}
        if self._unedited is None:
            qs = list(dict.fromkeys((p.question, p.chat) for p in self.pairs
                                    if p.kind == "neighbour"))
            got = generate(self.model, self.tokenizer, None,
                           [(Mode.NONE, q, None, chat) for q, chat in qs], self.max_new_tokens)
            self._unedited = {q: a for (q, _), a in zip(qs, got, strict=True)}
        answers = generate(self.model, self.tokenizer, pt,
                           [(Mode.PTOKENS, p.question, p.fact, p.chat) for p in self.pairs],
                           self.max_new_tokens)
        return wild_scores(self.pairs, answers, self._unedited)
