"""An optional judge model for free-form answers (`EvalConfig.judge_model`, the wild tasks).

The wild tasks judge a generated answer by containment (`matching.matches`: the new object as whole
words). That is exact and cheap, but it misses a right answer in other words ("a renowned
pianist" for the new object "piano") and cannot read a negation ("It is not in Rome"). The WILD
protocol ("The Mirage of Model Editing", ACL 2025) adds a language-model judge; this is ours.

A judge is any causal LM editkit can load: it reads the question, the expected (new) answer and
the generated one (`layouts.JUDGE_QUESTION`) and replies yes or no. Its verdict is read from the
first reply token's probabilities, P("Yes") / (P("Yes") + P("No")), one teacher-forced forward
per answer through `EditableLM.score_many`, so it is deterministic and needs no parsing. Its
verdicts are reported beside containment (`judged_*`) with their agreement (`judge_agrees`),
never in its place: a small judge is itself a model to be checked.

`"self"` reuses the evaluated model, unedited (no second model in memory, and offline); any other
value is loaded like `EditableLM.from_pretrained(model=...)` (an alias, Hub id or local path).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ..errors import InvalidInputError
from ..layouts import JUDGE_QUESTION, JUDGE_REPLIES, Mode

JUDGE_SELF = "self"
"""`judge_model` value: the evaluated model itself judges (unedited, no P-Tokens in its prompt)."""


class AnswerJudge:
    """Grades generated answers against an expected answer with a language model."""

    def __init__(self, lm: Any, name: str) -> None:
        self.lm = lm
        self.name = name
        self.chat = bool(getattr(lm, "has_chat_template", False))

    @classmethod
    def load(cls, spec: str, evaluated: Any) -> AnswerJudge:
        """The judge `spec` names: "self" (the evaluated model) or a model to load."""
        if spec == JUDGE_SELF:
            judge_lm = evaluated
        else:
            from ..editable import EditableLM
            judge_lm = EditableLM.from_pretrained(spec, mode=Mode.NONE)
        if getattr(judge_lm.engine, "kind", "in-process") != "in-process":
            raise InvalidInputError("The answer judge reads reply probabilities, which the remote "
                                    "engine does not serve; judge with a model in this process "
                                    "(judge_model: a model alias, Hub id or local path).")
        return cls(judge_lm, judge_lm.name if spec == JUDGE_SELF else spec)

    def prompt(self, question: str, expected: str, answer: str) -> str:
        """What the judge is asked about one answer."""
        return JUDGE_QUESTION.format(question=question.strip(), expected=expected.strip(),
                                     answer=" ".join(answer.split()))

    def p_yes(self, items: Sequence[tuple[str, str, str]]) -> list[float]:
        """P(yes) for each (question, expected answer, generated answer). An empty answer says
        nothing, so it gets 0 without asking the model."""
        asked = [i for i, (_, _, a) in enumerate(items) if a.strip()]
        out = [0.0] * len(items)
        if not asked:
            return out
        results = self.lm.score_many([self.prompt(*items[i]) for i in asked],
                                     [list(JUDGE_REPLIES)] * len(asked),
                                     mode=Mode.NONE, chat=self.chat)
        for i, r in zip(asked, results, strict=True):
            yes, no = (s.token_logprobs[0] for s in r.scores)  # the reply's first token
            out[i] = 1.0 / (1.0 + math.exp(min(no - yes, 700.0)))  # capped: exp overflows
        return out

    def settings(self) -> dict[str, Any]:
        """What a report records about the judge."""
        return {"model": self.name, "question": JUDGE_QUESTION, "replies": list(JUDGE_REPLIES),
                "chat": self.chat, "verdict": "P(yes) / (P(yes) + P(no)) >= 0.5, first reply "
                                              "token"}
