"""Hop-by-hop answering of an MQuAKE chain, one retrieved edit per hop (MeLLo / DeepEdit style).

`hop_chain` turns a case's published decomposition (`new_single_hops`) into hop templates with a
subject slot; `MultiHopAnswerer` fills each hop's slot with the previous hop's extracted answer,
asks the retrieval policy for the hop's edit (`EditableLM.select`, top 1) and answers greedily in
the chosen mode. `top_edit` is the same top-1 selection without a language model (retrieval-only
statistics).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from ..datasets import MquakeChainRecord
from ..errors import DatasetError
from ..layouts import Mode
from ..records import RetrievedEdit
from ..retrieval import EditMemory, EditStore, RetrievalSettings, select
from .matching import extract_answer
from .teacher_forcing import eval_layout

SLOT = "{}"


class HopForm(str, Enum):
    """How one hop is put to the model: MQuAKE's cloze ("The capital of Ireland is") or its
    question ("What is the capital of Ireland?")."""

    CLOZE = "cloze"
    QUESTION = "question"


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


def store_facts(memory: EditStore, facts: Sequence[str], namespace: str) -> None:
    """Put edits in a memory (idempotent per namespace: known texts are skipped)."""
    have = {e.text for e in memory.edits(namespace)}
    new = list(dict.fromkeys(f for f in facts if f not in have))
    if new:
        memory.add(new, namespace=namespace, on_update="keep-both")  # not updates of each other


def top_edit(memory: EditStore, query: str, settings: RetrievalSettings,
             namespace: str) -> RetrievedEdit | None:
    """The retrieval policy's fact for a hop without a language model (top 1, no fact policy):
    retrieval-only statistics."""
    return select(memory, query, settings, namespace=namespace, k=1).edit


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
    """Answers a hop chain with an `EditableLM`, retrieving one edit per hop from a memory
    through the lm's retrieval policy (`lm.select(query, namespace, memory=..., k=1)`)."""

    def __init__(self, lm: Any, mode: Mode | str = Mode.PTOKENS, *,
                 memory: EditStore | None = None, max_new_tokens: int = 10) -> None:
        self.lm = lm
        self.mode = Mode.parse(mode)
        self.memory: EditStore = (memory if memory is not None  # an empty memory is falsy
                                  else EditMemory(None,
                                                  embedder=lm.memory.embedder))
        self.max_new_tokens = max_new_tokens
        self._cache: dict[tuple[str, str | None], HopAnswer] = {}
        self.generations = 0

    def store(self, facts: Sequence[str], namespace: str) -> None:
        store_facts(self.memory, facts, namespace)

    def retrieve(self, query: str, namespace: str) -> RetrievedEdit | None:
        """The edit the retrieval policy places as the fact for this hop (top 1), or None."""
        return self.lm.select(query, namespace, memory=self.memory, k=1).edit

    def answer_hop(self, query: str, namespace: str, echoes: Sequence[str] = ()) -> HopAnswer:
        """Retrieve the hop's edit and answer the hop greedily (cached per query and fact)."""
        return self.answer_hops([query], namespace, [echoes])[0]

    def answer_hops(self, queries: Sequence[str], namespace: str,
                    echoes: Sequence[Sequence[str]]) -> list[HopAnswer]:
        """`answer_hop` for independent hops (the gold-input ones), the uncached ones decoded
        together (`EditableLM.ask_many`: each answer is the one `ask` gives alone)."""
        hits = [self.retrieve(q, namespace) for q in queries]
        keys = [(q, hit.edit.text if hit and self.mode is not Mode.NONE else None)
                for q, hit in zip(queries, hits, strict=True)]
        todo = list(dict.fromkeys(k for k in keys if k not in self._cache))
        if todo:
            asked = self.lm.ask_many([q for q, _ in todo],
                                     mode=[self.mode if f else Mode.NONE for _, f in todo],
                                     facts=[f for _, f in todo],
                                     max_new_tokens=self.max_new_tokens,
                                     **eval_layout(self.lm))
            self.generations += len(todo)
            for (q, f), a in zip(todo, asked, strict=True):
                echo = echoes[keys.index((q, f))]
                self._cache[(q, f)] = HopAnswer(query=q, fact=f, score=None,
                                                generation=a.text,
                                                span=extract_answer(a.text, (q, *echo)),
                                                prompt_tokens=a.prompt_tokens)
        return [HopAnswer(**{**self._cache[k].__dict__, "fact": hit.edit.text if hit else None,
                             "score": hit.score if hit else None})
                for k, hit in zip(keys, hits, strict=True)]

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
