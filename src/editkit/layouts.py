"""Prompt layouts shared by the SDK, evaluation and training.

- ptokens: `[B_1..B_m] fact [E_1..E_m]` then distractor facts, then the question (newline-separated)
- ike:     demonstrations + `New Fact: {fact}\\nPrompt: {question}`
- prompt:  `New Fact: {fact}\\nPrompt: {question}`
- none:    the question alone

Distractors (other, unrelated edits) go between the edit and the question in every edited layout.
User text is always tokenized with `split_special_tokens=True`, so a fact or question that contains
`<BEGIN_EDIT_0>` or `<|im_end|>` is read as plain characters: P-Token ids (which lie beyond the
tokenizer's vocabulary anyway) and the model's control tokens come only from this module.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Literal

from .errors import InvalidInputError, UnknownModeError

if TYPE_CHECKING:  # layouts is imported by ptokens.config (LAYOUT_VERSION): no runtime cycle
    from .ptokens import PTokens

# ---- the prompt text ------------------------------------------------------------------------
# Every literal editkit writes into a prompt is defined here; the builder below, the IKE
# demonstration store (ike.py), the fact policy (safety.py) and the HF export (export.py) all
# render from these. Trained P-Tokens have only ever seen this text: change any of it and bump
# LAYOUT_VERSION, so artifacts trained under the old text are refused on load and teacher
# caches are recomputed (tests/test_layouts.py pins the rendering of each version).

LAYOUT_VERSION = 1
"""Version of the prompt text below. Recorded in every P-Token artifact (`PTokenConfig.
layout_version`, checked on load), in the teacher-cache key and in the HF export's format."""

FACT_LABEL = "New Fact:"
QUESTION_LABEL = "Prompt:"
FACT_LINE = FACT_LABEL + " {fact}"  # plain and IKE layouts: the edit
QUESTION_LINE = QUESTION_LABEL + " {question}"  # plain and IKE layouts: the question
LINE_END = "\n"  # ends the fact line and every distractor line
DISTRACTOR_LINE = "{distractor}" + LINE_END  # one other (unrelated) edit
PTOKEN_FACT_END = "\n"  # P-Token layout: after the end markers, before the distractors
DEMO_SEPARATOR = "\n\n"  # ends every IKE demonstration
IKE_DEMO = FACT_LINE + LINE_END + QUESTION_LINE + " {answer}" + DEMO_SEPARATOR  # one demonstration
IKE_KEY = FACT_LINE  # the text IKE embeds to find demonstrations for a fact
LAYOUT_LABELS = (FACT_LABEL, QUESTION_LABEL)  # what the fact policy refuses inside a fact

_CHAT_SLOT = "\x00EDITKIT_TURN_{}\x00"
_CHAT_SLOT_RE = re.compile("\x00EDITKIT_TURN_(\\d+)\x00")


def distractor_lines(distractors: Sequence[str]) -> str:
    """The distractors, one per line (the same in every edited layout)."""
    return "".join(DISTRACTOR_LINE.format(distractor=d) for d in distractors)


def plain_context_text(fact: str, distractors: Sequence[str] = (), demos: str = "") -> str:
    """The plain / IKE layout before the question: demonstrations, the fact line, distractors."""
    return demos + FACT_LINE.format(fact=fact) + LINE_END + distractor_lines(distractors)


def ptoken_text(begin_tokens: Sequence[str], end_tokens: Sequence[str], fact: str,
                question: str = "", distractors: Sequence[str] = ()) -> str:
    """The P-Token layout as text, the markers written by name.

    `PromptBuilder` tokenizes exactly these pieces (markers as P-Token ids, the rest with
    `text_ids`); the HF export sends this text to a tokenizer whose vocabulary holds the markers.
    """
    return ("".join(begin_tokens) + fact + "".join(end_tokens) + PTOKEN_FACT_END
            + distractor_lines(distractors) + question)


def ike_demo_text(fact: str, question: str, answer: str) -> str:
    """One IKE demonstration: the fact, then a question answered (after a space) in its light."""
    return IKE_DEMO.format(fact=fact, question=question, answer=answer)


def ike_key(fact: str) -> str:
    """The text embedded to retrieve IKE demonstrations for `fact` (and to index each one)."""
    return IKE_KEY.format(fact=fact)


# ---- the evaluation's answer judge (`editkit.eval.answer_judge`) -----------------------------
JUDGE_QUESTION = (
    "Question: {question}\nExpected answer: {expected}\nGiven answer: {answer}\n"
    "Does the given answer say the expected answer? Judge only whether they agree, not whether "
    "either is true. Reply yes or no.")
"""What a judge model is asked about one generated answer. The expected answer of an edit is
counterfactual on purpose, so the judge is told to compare, not to fact-check."""
JUDGE_REPLIES = ("Yes", "No")
"""The reply tokens compared: P(yes) = P(first reply token is "Yes") over P("Yes") + P("No")."""


# ---- which layout a text asks for ------------------------------------------------------------
ChatSetting = Literal[True, False, "auto"]
"""`EditableLM(chat=...)`: True (always the chat template), False (always inline), or "auto"
(the template for questions when the model has one, inline for sentences to complete)."""

ANSWER_END = ("\n",)
"""The default stop of `ask` / `stream` / `ask_many` inline: the answer's first line. An instruct
model ends a chat reply with EOS; inline, a small model goes on past its answer ("English.\n\nThe
mother tongue of ..."), and what a user wants back is the answer, not the continuation."""

_QUESTION_STARTS = frozenset(
    "what which who whom whose where when why how is are was were do does did can could will "
    "would should shall may might has have had name tell give list explain describe".split())


def reads_as_question(text: str) -> bool:
    """Whether `text` is a question or request (answered in a chat turn) rather than the start of
    a sentence for the model to complete ("The mother tongue of X is").

    A question: it ends with "?"; or it opens with an interrogative or imperative word ("What",
    "Which", "Name", "Tell") and has no "?" before its end, since "Which city is X's twin city?
    It is" is a question already asked, followed by text to complete. Deliberately simple and
    predictable: callers who know better pass `chat=True` / `chat=False`.
    """
    t = text.strip()
    if t.endswith("?"):
        return True
    first = t.split(maxsplit=1)[0].strip(",:;!.").lower() if t else ""
    return first in _QUESTION_STARTS and "?" not in t


def check_chat_setting(value: Any) -> ChatSetting:
    """`chat` as given to `EditableLM`: True, False or "auto"; anything else is refused."""
    if value is True or value is False or value == "auto":
        return value
    raise InvalidInputError(f"chat must be True, False or 'auto', not {value!r}.")


class Mode(str, Enum):
    """How an edit reaches the model."""

    PTOKENS = "ptokens"
    IKE = "ike"
    PROMPT = "prompt"
    NONE = "none"

    @classmethod
    def parse(cls, value: Any) -> Mode:
        if isinstance(value, Mode):
            return value
        try:
            return cls(str(value).lower())
        except ValueError:
            raise UnknownModeError(
                f"Unknown mode {value!r}; choose one of: {', '.join(m.value for m in cls)}."
            ) from None


@dataclass
class Prompt:
    """Token ids ready for the model, and what went into them."""

    ids: list[int]
    mode: Mode
    question: str
    fact: str | None = None
    distractors: tuple[str, ...] = ()
    n_demos: int = 0
    chat: bool = False
    text: str = field(default="", repr=False)  # human-readable rendering, P-Tokens by name
    prefix_len: int = 0  # tokens before the question (chat head + context): cacheable per edit
    head_len: int = 0  # leading tokens that no edit changes (chat head, P-Token begin markers)

    def __len__(self) -> int:
        return len(self.ids)


class PromptBuilder:
    """Builds `Prompt`s for one tokenizer (and P-Token set), optionally inside a chat template."""

    def __init__(self, tokenizer: Any, ptokens: PTokens | None = None, *, chat: bool = False,
                 system_prompt: str | None = None) -> None:
        self.tokenizer = tokenizer
        self.ptokens = ptokens
        self.chat = chat
        self.system_prompt = system_prompt
        bos = tokenizer.bos_token_id
        probe = tokenizer("a").input_ids
        self.bos = [bos] if bos is not None and probe and probe[0] == bos else []

    def text_ids(self, text: str) -> list[int]:
        """Tokenize user text so that no special or P-Token id can come out of it."""
        return list(self.tokenizer(text, add_special_tokens=False,
                                   split_special_tokens=True).input_ids)

    def target_ids(self, target: str, *, chat: bool = False) -> list[int]:
        """Ids of an answer to score after a question: with a leading space inline, as ROME's
        CounterFact scoring tokenizes it (`tok(" " + target)`), bare inside a chat template,
        where it opens the assistant's reply. Every scorer (SDK, evaluation, training) uses this."""
        return self.text_ids(target if chat else " " + target)

    def frame(self, chat: bool, history: Sequence[tuple[str, str]] = ()
              ) -> tuple[list[int], list[int]]:
        """Token ids before and after the last user turn's content (the laid-out question).

        history: earlier (role, text) turns of a conversation, roles user / assistant / system.
        Inline (`chat=False`): BOS, then the history's texts as lines. With the chat template: the
        template rendered for the system prompt, the history and the last user turn (generation
        prompt added), every message's content replaced by a slot; template text is tokenized as
        such, history text as user text (special tokens split, so a typed `<|im_end|>` stays
        characters), and the last slot is where the caller's layout goes.
        """
        if not chat:
            ids = list(self.bos)
            if history:
                ids += self.text_ids("\n".join(text for _, text in history) + "\n")
            return ids, []
        if not getattr(self.tokenizer, "chat_template", None):
            raise InvalidInputError("chat=True but this tokenizer has no chat template; "
                                    "use chat=False.")
        roles = [role for role, _ in history] + ["user"]
        messages = [{"role": r, "content": _CHAT_SLOT.format(i)} for i, r in enumerate(roles)]
        if self.system_prompt:
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        rendered = self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                      add_generation_prompt=True)
        parts = _CHAT_SLOT_RE.split(rendered)
        slots = [int(x) for x in parts[1::2]]
        if slots != list(range(len(roles))):
            raise InvalidInputError("This model's chat template drops or reorders messages "
                                    f"(saw turns {slots} of {len(roles)}); use chat=False.")
        enc = self.tokenizer
        pieces: list[list[int]] = []
        for j, part in enumerate(parts):
            if j % 2 == 0:  # template text
                pieces.append(list(enc(part, add_special_tokens=False).input_ids) if part else [])
            elif int(part) < len(history):
                pieces.append(self.text_ids(history[int(part)][1]))
            else:  # the last user turn: the caller's layout goes here
                pieces.append([])
        cut = len(parts) - 2  # the last slot
        return [i for p in pieces[:cut] for i in p], pieces[-1]

    def context(self, mode: Mode | str, fact: str | None, distractors: Sequence[str] = (),
                demos: str = "") -> tuple[list[int], str]:
        """Ids (and display text) of everything between the chat head and the question.

        Evaluation computes this once per record and packs all of the record's questions after
        it; `build()` is `head + context + question_ids + tail`, so both see identical tokens.
        """
        mode = Mode.parse(mode)
        if fact is None or mode is Mode.NONE:
            return [], ""
        if mode is Mode.PTOKENS:
            if self.ptokens is None:
                raise InvalidInputError("mode='ptokens' needs P-Tokens; none are loaded.")
            rest = PTOKEN_FACT_END + distractor_lines(distractors)
            names = self.ptokens.config
            ids = self.ptokens.begin_ids + self.text_ids(fact) + self.ptokens.end_ids
            return (ids + self.text_ids(rest),
                    ptoken_text(names.begin_tokens, names.end_tokens, fact, "", distractors))
        if mode is Mode.IKE and not demos:
            raise InvalidInputError("mode='ike' needs demonstrations; none were given.")
        text = plain_context_text(fact, distractors, demos if mode is Mode.IKE else "")
        return self.text_ids(text), text

    @staticmethod
    def question_text(mode: Mode | str, question: str, edited: bool) -> str:
        """The question as it follows the context: `Prompt: q` in the plain and IKE layouts."""
        mode = Mode.parse(mode)
        if edited and mode in (Mode.IKE, Mode.PROMPT):
            return QUESTION_LINE.format(question=question)
        return question

    def build(self, mode: Mode | str, question: str, fact: str | None = None,
              distractors: Sequence[str] = (), demos: str = "", *, chat: bool | None = None,
              n_demos: int = 0, history: Sequence[tuple[str, str]] = ()) -> Prompt:
        """Lay out one question. `fact=None` (no edit) always gives the question alone.

        history: earlier (role, text) turns of a conversation (see `frame`); the laid-out
        question is the last user turn.
        """
        mode = Mode.parse(mode)
        chat = self.chat if chat is None else chat
        head, tail = self.frame(chat, history)
        edited = fact is not None and mode is not Mode.NONE
        if not edited:
            fact, distractors, n_demos = None, (), 0
        ctx, ctx_text = self.context(mode, fact, distractors, demos)
        q = self.question_text(mode, question, edited)
        if mode is not Mode.IKE:
            n_demos = 0
        return Prompt(ids=head + ctx + self.text_ids(q) + tail, mode=mode, question=question,
                      fact=fact, distractors=tuple(distractors), n_demos=n_demos, chat=chat,
                      text=ctx_text + q, prefix_len=len(head) + len(ctx),
                      head_len=len(head) + (self.ptokens.m if edited and mode is Mode.PTOKENS
                                            and self.ptokens is not None else 0))
