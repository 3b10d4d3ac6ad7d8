"""Multi-hop editing on MQuAKE: answer a chain of one-hop queries, one retrieved edit per hop.

Why: asking the whole multi-hop question once, with every edit of the case in the prompt
(`editkit eval` on MQuAKE, "single-shot"), scores 0 for the 135M default model; it does not chain
facts inside one forward pass. MeLLo (Zhong et al., 2023) and DeepEdit instead split the question
into hops, retrieve the edit relevant to each hop from an edit memory, answer the hop, and feed the
answer into the next hop. This module does that on top of `EditableLM`:

1. all edits of a case go into a real `EditMemory` (in RAM), one namespace per case
   (`memory="case"`) or all evaluated cases together (`memory="all"`, a harder retrieval);
2. the chain of hops comes from MQuAKE's own decomposition (`new_single_hops`: one question and
   one cloze per hop, with the hop's subject replaced by a slot). This is the **oracle
   decomposition** setting: the model never splits the question itself (a 135M model cannot;
   see docs/results.md), so numbers here are an upper bound on what retrieval + one-hop answering
   gives, not MQuAKE's end-to-end protocol;
3. per hop, the slot is filled with the previous hop's extracted answer (the gold subject for
   hop 1), the most similar edit is retrieved for that text, the hop is answered in the chosen
   mode (ptokens / ike / prompt / none) with greedy generation, and the extracted answer moves on.

It also reports the single-shot baseline on the same cases and two scoring-based variants
(a 2-way choice between the new and the old object, like CounterFact's ES), because generation
can be hopeless where ranking is not.

Matching (`matches`): the answer span extracted from a generation (`extract_answer`: first line,
known lead-ins and echoes of the query stripped, cut at the first sentence/clause break) must
contain the gold answer or one of its aliases as whole words, after `normalize` (Unicode
accent folding, lower case, punctuation to spaces, a leading "the" dropped from the alias).
"""
from __future__ import annotations

import json
import os
import re
import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from . import metrics
from .datasets import MquakeRecord
from .errors import DatasetError, InvalidInputError
from .evaluation import Report
from .layouts import Mode
from .memory import EditMemory
from .records import RetrievedEdit

Progress = Callable[[int, int], None]
SLOT = "{}"


class HopForm(str, Enum):
    """How one hop is put to the model: MQuAKE's cloze ("The capital of Ireland is") or its
    question ("What is the capital of Ireland?")."""

    CLOZE = "cloze"
    QUESTION = "question"


class MemoryScope(str, Enum):
    """Which edits share the retrieval namespace: one case's, or every evaluated case's."""

    CASE = "case"
    ALL = "all"


# ---- data -----------------------------------------------------------------------------------
class MquakeHop(BaseModel):
    """One hop of an MQuAKE chain as published (`single_hops` / `new_single_hops` entries)."""

    model_config = ConfigDict(extra="ignore")
    question: str
    cloze: str
    answer: str
    answer_alias: list[str] = Field(default_factory=list)


class MquakeChainRecord(MquakeRecord):
    """An MQuAKE case with what the hop-by-hop answerer needs beyond `MquakeRecord`."""

    answer: str
    answer_alias: list[str] = Field(default_factory=list)
    single_hops: list[MquakeHop] = Field(min_length=1)
    new_single_hops: list[MquakeHop] = Field(min_length=1)


@dataclass(frozen=True)
class Hop:
    """One hop of the edited chain, with its subject replaced by a slot.

    `subject` is the gold subject (the new answer of the previous hop); `fact` is the edit made to
    this hop (None for an unedited hop); `old_answer` is the object before the edit (the new one
    for an unedited hop), used only by the 2-way scoring variant.
    """

    index: int
    subject: str
    question_template: str
    cloze_template: str
    answer: str
    aliases: tuple[str, ...]
    old_answer: str
    fact: str | None

    @property
    def answers(self) -> list[str]:
        return [self.answer, *self.aliases]

    def query(self, form: HopForm, subject: str | None = None) -> str:
        """The hop's text with `subject` (default: the gold one) in the slot."""
        template = self.cloze_template if form is HopForm.CLOZE else self.question_template
        return template.replace(SLOT, self.subject if subject is None else subject)


def _slot(text: str, subject: str, where: str) -> str:
    if text.count(subject) != 1:
        raise DatasetError(f"{where}: subject {subject!r} occurs {text.count(subject)} times in "
                           f"{text!r}; cannot make a hop template.")
    return text.replace(subject, SLOT)


def hop_chain(record: MquakeChainRecord) -> list[Hop]:
    """The edited chain of a case: hop i's subject is hop i-1's new answer.

    Hop 1's subject is the subject of the rewrite whose question is hop 1's question (MQuAKE puts
    the rewrites in hop order, and checks that here). A hop with no rewrite is unedited.
    """
    rewrites = {rw.question: rw for rw in record.requested_rewrite if rw.question}
    first = rewrites.get(record.new_single_hops[0].question)
    if first is None:
        raise DatasetError(f"case {record.case_id}: hop 1 is not one of the case's rewrites, so "
                           "its subject is unknown.")
    subject, out = first.subject, []
    for i, h in enumerate(record.new_single_hops):
        where = f"case {record.case_id} hop {i + 1}"
        rw = rewrites.get(h.question)
        if rw is not None and rw.subject != subject:
            raise DatasetError(f"{where}: rewrite subject {rw.subject!r} is not the chain's "
                               f"{subject!r}.")
        out.append(Hop(index=i, subject=subject,
                       question_template=_slot(h.question, subject, where),
                       cloze_template=_slot(h.cloze, subject, where), answer=h.answer,
                       aliases=tuple(h.answer_alias),
                       old_answer=rw.target_true.text if rw else h.answer,
                       fact=rw.fact if rw else None))
        subject = h.answer
    if out[-1].answer != record.new_answer:
        raise DatasetError(f"case {record.case_id}: the last hop's answer {out[-1].answer!r} is "
                           f"not the case's new answer {record.new_answer!r}.")
    return out


def load_chain_records(path: str | os.PathLike[str]) -> list[MquakeChainRecord]:
    """Read an MQuAKE file with its hop decompositions (the published format, unchanged)."""
    p = Path(path)
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"Cannot read MQuAKE file {p}: {exc}") from exc
    if not isinstance(raw, list) or not raw:
        raise DatasetError(f"{p} must hold a non-empty JSON list of MQuAKE cases.")
    out = []
    for i, r in enumerate(raw):
        try:
            out.append(MquakeChainRecord.model_validate(r))
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(x) for x in err["loc"])
            raise DatasetError(f"{p}: case {i} lacks MQuAKE hop data: field {field!r}: "
                               f"{err['msg']}") from exc
    return out


# ---- matching -------------------------------------------------------------------------------
_LEAD_INS = re.compile(r"^(?:(?:the\s+)?answer(?:\s+is)?\s*:?|a\s*:)\s*", re.IGNORECASE)
_BREAK = re.compile(r"\n|[.;!?](?=\s|$)|,\s|\s\(|\s+in\s+\d")


_FOLD = str.maketrans({"ø": "o", "æ": "ae", "œ": "oe", "ß": "ss", "đ": "d", "ł": "l",
                       "ı": "i", "þ": "th", "ð": "d"})


def normalize(text: str) -> str:
    """Lower case, accents folded (é → e, ø → o), '&' → 'and', every non-alphanumeric run → one
    space."""
    folded = unicodedata.normalize("NFKD", text.lower())
    folded = "".join(c for c in folded if not unicodedata.combining(c)).translate(_FOLD)
    folded = folded.replace("&", " and ")
    return " ".join(re.sub(r"[\W_]+", " ", folded).split())


def extract_answer(generation: str, echoes: Sequence[str] = ()) -> str:
    """The answer span of a short greedy generation: what is passed to the next hop and judged.

    A lead-in ("The answer is:", "A:", also when a line break follows it) and an echo of the query
    (e.g. the hop's cloze "The capital of Latvia is" before "Tromsø") are stripped; then the text
    is cut at the first line or sentence/clause break ("\\n", ". ", ", ", ";", " (", " in <year>").
    """
    text = generation.strip()
    for _ in range(2):  # "The answer is: The capital of X is Y", "The answer is:\n\nY"
        text = _LEAD_INS.sub("", text, count=1).strip()
        for echo in echoes:
            e = echo.strip().rstrip("?").strip()
            if e and text.lower().startswith(e.lower()):
                text = text[len(e):].lstrip(" ?:").strip()
    return _BREAK.split(text, maxsplit=1)[0].strip(" \"'`")


def matches(span: str, answers: Sequence[str]) -> bool:
    """True if the span contains an answer or alias as whole words (after `normalize`)."""
    hay = f" {normalize(span)} "
    for a in answers:
        n = normalize(a)
        n = n.removeprefix("the ")
        if n and f" {n} " in hay:
            return True
    return False


# ---- the answerer ---------------------------------------------------------------------------
class MultiHopConfig(BaseModel):
    """What to run: data, mode, which variants, and the generation budget."""

    model_config = ConfigDict(extra="forbid")
    data: Path
    mode: Mode = Mode.PTOKENS
    limit: int | None = Field(None, ge=1)
    forms: list[HopForm] = Field(default_factory=lambda: [HopForm.CLOZE, HopForm.QUESTION],
                                 min_length=1)
    memory: MemoryScope = MemoryScope.CASE
    threshold: float | None = Field(None, ge=-1.0, le=1.0,
                                    description="retrieval cosine threshold; None = the lm's")
    max_new_tokens: int = Field(10, ge=1, le=64)
    single_shot: bool = Field(True, description="also the one-question, all-edits baseline")
    scoring: bool = Field(True, description="also the 2-way new-vs-old scoring variants")


@dataclass
class HopAnswer:
    """One answered hop: what was asked, which edit was retrieved (`fact`, `score`; recorded in
    mode none too, where the model does not see it), what came back and the extracted `span`."""

    query: str
    fact: str | None
    score: float | None
    generation: str
    span: str
    prompt_tokens: int


class MultiHopAnswerer:
    """Answers a hop chain with an `EditableLM`, retrieving one edit per hop from a memory."""

    def __init__(self, lm: Any, mode: Mode | str = Mode.PTOKENS, *,
                 memory: EditMemory | None = None, threshold: float | None = None,
                 max_new_tokens: int = 10) -> None:
        """`lm=None` gives a retrieval-only answerer (`store`, `retrieve`); it then needs
        `memory` and `threshold`."""
        if lm is None and (memory is None or threshold is None):
            raise InvalidInputError("A retrieval-only MultiHopAnswerer needs memory and "
                                    "threshold.")
        self.lm = lm
        self.mode = Mode.parse(mode)
        self.memory = (memory if memory is not None  # an empty EditMemory is falsy
                       else EditMemory(None, embedder=getattr(lm.memory, "embedder", None)))
        self.threshold = float(lm.retrieval.threshold if threshold is None else threshold)
        self.max_new_tokens = max_new_tokens
        self._cache: dict[tuple[str, str | None], HopAnswer] = {}
        self.generations = 0

    def store(self, facts: Sequence[str], namespace: str) -> None:
        """Put edits in the memory (idempotent per namespace: known texts are skipped)."""
        have = {e.text for e in self.memory.edits(namespace)}
        new = list(dict.fromkeys(f for f in facts if f not in have))
        if new:
            self.memory.add(new, namespace=namespace)

    def retrieve(self, query: str, namespace: str) -> RetrievedEdit | None:
        """The single most similar edit above the threshold, or None."""
        hits = self.memory.retrieve(query, k=1, threshold=self.threshold, namespace=namespace)
        return hits[0] if hits else None

    def answer_hop(self, query: str, namespace: str, echoes: Sequence[str] = ()) -> HopAnswer:
        """Retrieve the hop's edit and answer the hop greedily (cached per query and fact)."""
        hit = self.retrieve(query, namespace)
        fact = hit.edit.text if hit and self.mode is not Mode.NONE else None
        key = (query, fact)
        if key not in self._cache:
            a = self.lm.ask(query, mode=self.mode if fact else Mode.NONE, fact=fact,
                            max_new_tokens=self.max_new_tokens)
            self.generations += 1
            self._cache[key] = HopAnswer(query=query, fact=fact, score=None, generation=a.text,
                                         span=extract_answer(a.text, (query, *echoes)),
                                         prompt_tokens=a.prompt_tokens)
        out = self._cache[key]
        return HopAnswer(**{**out.__dict__, "fact": hit.edit.text if hit else None,
                            "score": hit.score if hit else None})

    def chain(self, hops: Sequence[Hop], form: HopForm, namespace: str,
              subject: str | None = None) -> list[HopAnswer]:
        """Answer hop by hop, each hop's extracted answer filling the next hop's slot.

        Stops early when a hop yields an empty span (there is nothing to substitute).
        """
        out: list[HopAnswer] = []
        subj = hops[0].subject if subject is None else subject
        for hop in hops:
            query = hop.query(form, subj)
            a = self.answer_hop(query, namespace, echoes=[hop.query(HopForm.CLOZE, subj)])
            out.append(a)
            subj = a.span
            if not subj:
                break
        return out

    def clear_cache(self) -> None:
        self._cache.clear()


# ---- evaluation -----------------------------------------------------------------------------
class MultiHopReport(Report):
    """Metrics (value ×100, stderr, n), timing and per-case details; `save()` writes JSON."""

    def table(self) -> str:
        """A markdown table: metric, value, stderr, n, what it measures."""
        lines = metrics.markdown_rows(self.metrics)
        t = self.timing
        lines.append(f"| generations | {int(t['generations'])} | | | {t['seconds']:.0f} s |")
        return "\n".join(lines)


# name, protocol: the order of the table
METRICS: list[tuple[str, str]] = [
    ("single_shot_case", "generation, any of 3 questions (MQuAKE)"),
    ("single_shot_question", "generation, per question"),
    ("single_shot_score", "2-way score new vs old final answer, per question"),
]
for _f in HopForm:
    METRICS += [
        (f"{_f.value}_chain", f"oracle decomposition, {_f.value} hops, chained: final answer"),
        (f"{_f.value}_chain_all_hops", "chained: every hop right"),
        (f"{_f.value}_hop", "gold-input hops: hop accuracy (mean over hops)"),
        *[(f"{_f.value}_hop{i}", f"gold-input hop {i}") for i in range(1, 5)],
        (f"{_f.value}_retrieval", "gold-input hops: retrieved edit is the hop's edit"),
        (f"{_f.value}_chain_retrieval", "chained hops: retrieved edit is the hop's edit"),
    ]
METRICS += [
    ("cloze_hop_score", "gold-input cloze hops, 2-way score new vs old object"),
    ("cloze_chain_score", "every cloze hop prefers new over old (2-way, chance 1/2^hops)"),
]


def _score_new(lm: Any, mode: Mode, query: str, fact: str | None, new: str,
               old: str) -> float | None:
    """1.0 if the new answer's mean log-prob beats the old one's (ties count as failure);
    None for an unedited hop (new == old: nothing to choose)."""
    if new == old:
        return None
    r = lm.score(query, [new, old], mode=mode if fact else Mode.NONE, fact=fact)
    return float(r.scores[0].mean_logprob > r.scores[1].mean_logprob)


def evaluate_case(ans: MultiHopAnswerer, rec: MquakeChainRecord, cfg: MultiHopConfig,
                  namespace: str) -> dict[str, Any]:
    """All variants for one case; returns per-case rates (0/1 or means) and the details."""
    lm, mode = ans.lm, ans.mode
    hops = hop_chain(rec)
    final = [rec.new_answer, *rec.new_answer_alias]
    row: dict[str, Any] = {"case_id": rec.case_id, "new_answer": rec.new_answer}
    ans.clear_cache()
    if cfg.single_shot:  # exactly `editkit eval`'s MQuAKE protocol, plus the normalized match
        k = max(len(rec.facts), 1)
        details = []
        for q in rec.questions:
            hits = ans.memory.retrieve(q, k=k, threshold=ans.threshold, namespace=namespace)
            edited = bool(hits) and mode is not Mode.NONE
            fact = hits[0].edit.text if edited else None
            dis = [h.edit.text for h in hits[1:]] if edited else None
            a = lm.ask(q, mode=mode if edited else Mode.NONE, fact=fact, distractors=dis,
                       max_new_tokens=cfg.max_new_tokens)
            ans.generations += 1
            span = extract_answer(a.text, (q,))
            d: dict[str, Any] = {"question": q, "fact": fact, "generation": a.text, "span": span,
                                 "correct": matches(span, final),
                                 "legacy_contains": metrics.contains_answer(a.text, final)}
            if cfg.scoring:
                r = lm.score(q, [rec.new_answer, rec.answer],
                             mode=mode if edited else Mode.NONE, fact=fact, distractors=dis)
                d["score_new_wins"] = float(r.scores[0].mean_logprob > r.scores[1].mean_logprob)
            details.append(d)
        ok = [float(d["correct"]) for d in details]
        row["single_shot_case"] = float(any(ok))
        row["single_shot_question"] = sum(ok) / len(ok)
        if cfg.scoring:
            row["single_shot_score"] = sum(d["score_new_wins"] for d in details) / len(details)
        row["single_shot"] = details
    for form in cfg.forms:
        f = form.value
        gold = [ans.answer_hop(h.query(form), namespace, echoes=[h.query(HopForm.CLOZE)])
                for h in hops]
        gold_ok = [matches(a.span, h.answers) for a, h in zip(gold, hops)]
        for i, ok in enumerate(gold_ok):
            row[f"{f}_hop{i + 1}"] = float(ok)
        row[f"{f}_hop"] = sum(gold_ok) / len(gold_ok)
        row[f"{f}_retrieval"] = sum(a.fact == h.fact for a, h in zip(gold, hops)) / len(hops)
        chain = ans.chain(hops, form, namespace)
        chain_ok = [matches(a.span, h.answers) for a, h in zip(chain, hops)]
        row[f"{f}_chain"] = float(len(chain) == len(hops) and chain_ok[-1])
        row[f"{f}_chain_all_hops"] = float(len(chain) == len(hops) and all(chain_ok))
        row[f"{f}_chain_retrieval"] = (sum(a.fact == h.fact for a, h in zip(chain, hops))
                                       / len(hops))
        row[f"{f}_details"] = {
            "gold": [dict(a.__dict__, correct=ok, edit=h.fact)
                     for a, h, ok in zip(gold, hops, gold_ok)],
            "chain": [dict(a.__dict__, correct=ok, edit=h.fact)
                      for a, h, ok in zip(chain, hops, chain_ok)]}
        if cfg.scoring and form is HopForm.CLOZE:
            scored = [_score_new(lm, mode, a.query, a.fact if mode is not Mode.NONE else None,
                                 h.answer, h.old_answer) for a, h in zip(gold, hops)]
            wins = [w for w in scored if w is not None]
            if wins:
                row["cloze_hop_score"] = sum(wins) / len(wins)
                row["cloze_chain_score"] = float(all(wins))
    return row


def run(lm: Any, config: MultiHopConfig | None = None, *, progress: Progress | None = None,
        **kwargs: Any) -> MultiHopReport:
    """Run the multi-hop evaluation: `run(lm, data=..., mode="prompt", limit=30)`."""
    cfg = config or MultiHopConfig(**kwargs)
    records = load_chain_records(cfg.data)
    records = records[: cfg.limit] if cfg.limit else records
    if not records:
        raise InvalidInputError("No MQuAKE cases to evaluate.")
    ans = MultiHopAnswerer(lm, cfg.mode, threshold=cfg.threshold,
                           max_new_tokens=cfg.max_new_tokens)
    if cfg.memory is MemoryScope.ALL:
        ans.store([f for r in records for f in r.facts], "mquake-all")
    started = time.perf_counter()
    rows = []
    for n, rec in enumerate(records):
        ns = "mquake-all" if cfg.memory is MemoryScope.ALL else f"case-{rec.case_id}"
        if cfg.memory is MemoryScope.CASE:
            ans.store(rec.facts, ns)
        rows.append(evaluate_case(ans, rec, cfg, ns))
        if cfg.memory is MemoryScope.CASE:
            ans.memory.clear(ns)
        if progress:
            progress(n + 1, len(records))
    seconds = time.perf_counter() - started
    values = metrics.rate_scores(rows, [(k, k) for k, _ in METRICS], "")
    proto = dict(METRICS)
    values = {k: v.model_copy(update={"protocol": proto[k]}) for k, v in values.items()}
    return MultiHopReport(config=json.loads(cfg.model_dump_json()), model=lm.name,
                          ptokens=lm.ptokens_source, metrics=values,
                          timing={"seconds": seconds, "cases": float(len(rows)),
                                  "generations": float(ans.generations)},
                          records=rows)


def retrieval_stats(records: Sequence[MquakeChainRecord], memory: EditMemory,
                    scope: MemoryScope, threshold: float,
                    forms: Sequence[HopForm] = tuple(HopForm)) -> dict[str, metrics.MetricValue]:
    """Per-hop retrieval alone (no language model): with the gold subject in each hop's slot,
    is the single retrieved edit the hop's edit? Cheap enough for the whole file."""
    ans = MultiHopAnswerer(None, memory=memory, threshold=threshold)
    if scope is MemoryScope.ALL:
        ans.store([f for r in records for f in r.facts], "mquake-all")
    rows = []
    for rec in records:
        ns = "mquake-all" if scope is MemoryScope.ALL else f"case-{rec.case_id}"
        if scope is MemoryScope.CASE:
            ans.store(rec.facts, ns)
        hops = [h for h in hop_chain(rec) if h.fact is not None]
        row = {}
        for form in forms:
            hits = [ans.retrieve(h.query(form), ns) for h in hops]
            row[form.value] = sum(bool(x) and x.edit.text == h.fact
                                  for x, h in zip(hits, hops)) / len(hops)
        rows.append(row)
        if scope is MemoryScope.CASE:
            memory.clear(ns)
    return metrics.rate_scores(rows, [(f.value, f"retrieval_{f.value}_{scope.value}")
                                      for f in forms], "gold-input hop retrieval, top-1")
