"""The training data: which records are read, and the question/answer pairs each record becomes.

A record gives five pairs (edit, paraphrase, neighbour, distractor, empty edit), up to eight with
`hard_neighbours`, `absent_pairs` and `older_value_pairs` (a distractor pair whose distractors
hold the slot's older value: a memory that keeps both values of a fact); docs/training.md has
the table. The pairs are all the teacher and the student ever see, and the teacher cache hashes
them (`teacher_cache_key`), so everything that chooses them (the PAIR_FIELDS of the config)
lives here and nowhere else.

Called by `Trainer.__init__` (records, then the validation and the training pairs), by the CLI
(`load_training_records` checks the data files and sizes before the model loads) and by
scripts/wild_val_split.py.
"""
from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, Field

from ..datasets import CounterFactRecord, load_records, one_edit_per_fact
from ..errors import InvalidInputError
from ..ike import default_train_file
from ..layouts import reads_as_question
from .config import QUESTION_KINDS, Kind, TrainConfig


class Pair(BaseModel):
    """One training question: the fact (None for empty edits), distractors and the answer."""

    kind: Kind
    record: int
    case_id: int = -1  # the teacher's IKE demonstrations never come from this record
    asks: Literal["edit", "paraphrase", "neighbour", ""] = ""  # distractor pairs: which question
    fact: str | None
    distractors: list[str] = Field(default_factory=list)
    question: str
    answer: str
    contrast: str | None = None  # the competing answer of the margin term (None: no margin)
    chat: bool = False  # laid out in the chat template (teacher and student), answer bare

    @property
    def keeps_old_answer(self) -> bool:
        """True where the answer must stay the unedited one (neighbour questions, no fact)."""
        return self.kind in ("neighbour", "empty", "absent") or self.asks == "neighbour"


def _contrast(answer: str, other: str) -> str | None:
    return None if other.strip().casefold() == answer.strip().casefold() else other


def _subject_words(subject: str) -> set[str]:
    """The words that make two subjects look alike to an embedder ("Toyota Camry" / "Toyota
    Corolla"): three letters or more, not a function word."""
    words = "".join(c if c.isalnum() else " " for c in subject.casefold()).split()
    return {w for w in words if len(w) >= 3 and w not in _FUNCTION_WORDS}


_FUNCTION_WORDS = frozenset({"the", "and", "for", "von", "van", "der", "des", "del", "della",
                             "les", "los", "las", "una", "uno"})


def build_pairs(records: Sequence[CounterFactRecord], cfg: TrainConfig,
                pool: Sequence[CounterFactRecord], rng: random.Random) -> list[Pair]:
    """Five pairs per record (up to eight with `hard_neighbours`, `absent_pairs` and
    `older_value_pairs`).

    Distractor pairs carry 1..max_distractors facts of other `pool` records. A hard neighbour asks
    about a `pool` record whose subject shares a word with this record's subject; an absent pair
    puts only other records' facts in the context. Both keep the unedited answer.
    """
    by_word: dict[str, list[int]] = {}
    if cfg.hard_neighbours:
        for j, o in enumerate(pool):
            for w in _subject_words(o.subject):
                by_word.setdefault(w, []).append(j)
    pairs = []
    for i, r in enumerate(records):
        qa = [(r.prompt, r.target_new, r.ground_truth),
              (r.rephrase_prompt, r.target_new, r.ground_truth),
              (r.locality_prompt, r.locality_ground_truth, r.target_new)]
        common = {"record": i, "case_id": r.case_id}
        for kind, (q, a, c) in zip(QUESTION_KINDS, qa):
            pairs.append(Pair(kind=kind, fact=r.fact, question=q, answer=a,
                              contrast=_contrast(a, c), **common))
        k = rng.randint(1, cfg.max_distractors)
        others = rng.sample([o.fact for o in pool if o.fact != r.fact], k)
        asks, (q, a, c) = rng.choice(list(zip(QUESTION_KINDS, qa)))
        pairs.append(Pair(kind="distractor", fact=r.fact, distractors=others, question=q,
                          answer=a, asks=asks, contrast=_contrast(a, c), **common))
        pairs.append(Pair(kind="empty", fact=None, question=r.prompt, answer=r.ground_truth,
                          contrast=_contrast(r.ground_truth, r.target_new), **common))
        if cfg.hard_neighbours:
            near = sorted({j for w in _subject_words(r.subject) for j in by_word.get(w, ())
                           if pool[j].subject.casefold() != r.subject.casefold()})
            if near:
                o = pool[rng.choice(near)]
                pairs.append(Pair(kind="neighbour", fact=r.fact, question=o.prompt,
                                  answer=o.ground_truth,
                                  contrast=_contrast(o.ground_truth, r.target_new), **common))
        if cfg.absent_pairs:
            k = rng.randint(1, cfg.max_distractors)
            foreign = rng.sample([o.fact for o in pool
                                  if o.subject.casefold() != r.subject.casefold()], k)
            pairs.append(Pair(kind="absent", fact=foreign[0], distractors=foreign[1:],
                              question=r.prompt, answer=r.ground_truth,
                              contrast=_contrast(r.ground_truth, r.target_new), **common))
        if cfg.older_value_pairs:  # the slot's older value sits among the distractors
            older = f"{r.prompt} {r.ground_truth}"
            others = rng.sample([o.fact for o in pool if o.fact not in (r.fact, older)],
                                rng.randint(0, cfg.max_distractors - 1))
            others.insert(rng.randint(0, len(others)), older)
            asks, (q, a, c) = rng.choice(list(zip(QUESTION_KINDS[:2], qa[:2])))
            pairs.append(Pair(kind="distractor", fact=r.fact, distractors=others, question=q,
                              answer=a, asks=asks, contrast=_contrast(a, c), **common))
    if cfg.chat_questions:
        pairs = [p.model_copy(update={"chat": True}) if _chat_pair(p) else p for p in pairs]
    return pairs


def _chat_pair(p: Pair) -> bool:
    """A question (as `ask` would lay it out in the chat template) whose answers are not empty:
    a few zsRE records have an empty new object, which inline reads as " " but in a chat reply
    has no token at all."""
    return (reads_as_question(p.question) and bool(p.answer.strip())
            and (p.contrast is None or bool(p.contrast.strip())))


def _groups(pairs: Sequence[Pair], idx: Sequence[int]) -> dict[tuple[Any, ...], list[int]]:
    """Pairs (by index) that share a context (fact, distractors, layout): one packed pass each."""
    out: dict[tuple[Any, ...], list[int]] = {}
    for i in idx:
        p = pairs[i]
        out.setdefault((p.record, p.fact, tuple(p.distractors), p.chat), []).append(i)
    return out


def load_training_records(cfg: TrainConfig) -> list[CounterFactRecord]:
    """The records of `cfg.data` (default: vendored CounterFact train), one edit per fact, in the
    order training draws them; sizes the files cannot supply are refused.

    Each file is shuffled (seed `cfg.seed`) and the files contribute in turn, one record each
    until one runs out, so a small zsRE file is not drowned by a large CounterFact one. zsRE
    records become CounterFact-shaped ones (`ZsreRecord.as_counterfact`).
    """
    paths = cfg.data or [default_train_file()]
    rng = random.Random(cfg.seed)
    streams = []
    for path in paths:
        fmt, raw = load_records(path)
        if fmt == "zsre":
            raw = [r.as_counterfact() for r in raw if r.answers]  # no old answer: no pairs
        elif fmt != "counterfact":
            raise InvalidInputError(
                f"{path} holds {fmt} records; training reads EasyEdit CounterFact or zsRE files.")
        kept, _ = one_edit_per_fact(raw)
        rng.shuffle(kept)
        streams.append(kept)
    records = [r for row in _round_robin(streams) for r in row]
    if cfg.n_train + cfg.n_val > len(records):
        raise InvalidInputError(
            f"n_train + n_val = {cfg.n_train} + {cfg.n_val} = {cfg.n_train + cfg.n_val}, but "
            f"{', '.join(map(str, paths))} hold(s) {len(records)} records (one per fact). Lower "
            "--n-train / --n-val, or pass a larger --data file.")
    return records


def _round_robin(streams: Sequence[Sequence[Any]]) -> list[list[Any]]:
    """Rows of one item per stream, while any stream has items left."""
    return [[s[i] for s in streams if i < len(s)] for i in range(max(map(len, streams)))]
