"""Teacher-forced scoring of a record's probes behind one shared context.

Prompts come from the `PromptBuilder`'s public `build()` (the same layout `EditableLM.ask/score`
send, chat framing included when the builder's `chat` is on), targets from
`PromptBuilder.target_ids` (the one home of the leading-space rule). The shared part
(`prompt.ids[:prefix_len]`: chat head or BOS, demonstrations, fact, distractors) is computed once
and every (question, targets) branch is packed behind it (`runtime.scoring.score_packed`), so IKE's
~900-token prefix costs one forward per record. Used by `editkit eval` and by
`Trainer.val_scores`.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from ..errors import InvalidInputError
from ..ike import DemoStore
from ..layouts import Mode, PromptBuilder
from ..ptokens import PTokens
from ..runtime.scoring import ScoreItem, TargetScore, score_packed


def eval_layout(lm: Any) -> dict[str, Any]:
    """The layout of the generated answers the evaluation tasks ask for (`ask_many`): the model's
    fixed setting (`lm.layouts.chat`, the one the teacher-forced scorer builds with, recorded in
    the report), not the per-question "auto" choice of `ask`, and no default stop, so that
    published numbers do not move with the SDK's conveniences."""
    return {"chat": bool(lm.layouts.chat), "stop": ()}


class Probe(BaseModel):
    """One question asked about a record and the targets scored after it."""

    kind: str
    question: str
    targets: list[str]  # ROME: [new, true]; token accuracy: [target]; MQuAKE: answer + aliases


@dataclass
class Scored:
    """Scores of probes sharing one context: per probe, per target; the target ids; and the prompt
    tokens per probe (context + question, what a user would send)."""

    scores: list[list[TargetScore]]
    targets: list[list[list[int]]]
    prompt_tokens: list[int]


class Scorer:
    """Scores probes with a model, a `PromptBuilder` and (for the P-Token layout) P-Tokens."""

    def __init__(self, model: Any, layouts: PromptBuilder, ptokens: PTokens | None,
                 demos: DemoStore | None = None, *, self_copy: bool = False) -> None:
        self.model, self.layouts, self.ptokens = model, layouts, ptokens
        self.demos, self.self_copy = demos, self_copy

    @classmethod
    def for_lm(cls, lm: Any, demos: DemoStore | None = None, *,
               self_copy: bool = False) -> Scorer:
        """A scorer with an `EditableLM`'s model, layouts (and so its chat setting), P-Tokens."""
        return cls(lm.model, lm.layouts, lm.ptokens, demos, self_copy=self_copy)

    def demonstrations(self, fact: str, *, exclude: Sequence[int] = (),
                       exclude_prompts: Sequence[str] = ()) -> str:
        """IKE demonstrations for `fact` (kinds shuffled per fact, the record excluded)."""
        if self.demos is None:
            raise InvalidInputError("IKE scoring needs a demonstration store; none was given.")
        return self.demos.retrieve(fact, exclude=exclude, exclude_prompts=exclude_prompts,
                                   self_copy=self.self_copy).text

    def score(self, mode: Mode, fact: str | None, distractors: Sequence[str],
              probes: Sequence[Probe], demos: str = "") -> Scored:
        """Score `probes` behind the context of (mode, fact, distractors, demos)."""
        prompts = [self.layouts.build(mode, p.question, fact, distractors, demos)
                   for p in probes]
        prefix = prompts[0].ids[: prompts[0].prefix_len]
        items = []
        for p, pr in zip(probes, prompts, strict=True):
            assert pr.ids[: pr.prefix_len] == prefix  # one context per call, by construction
            items.append(ScoreItem(question=pr.ids[pr.prefix_len:],
                                   targets=[self.layouts.target_ids(t, chat=pr.chat)
                                            for t in p.targets]))
        edited = fact is not None and mode is not Mode.NONE
        pt = self.ptokens if edited and mode is Mode.PTOKENS else None
        return Scored(scores=score_packed(self.model, pt, prefix, items),
                      targets=[it.targets for it in items],
                      prompt_tokens=[len(pr) for pr in prompts])
