"""What `ask`, `stream` and `ask_many` hand back and how their per-call arguments are read: the
`AnswerStream` of `stream()`, where an answer ends by default, and the per-question lists of
`ask_many` / `score_many`. Kept apart from the facade so `editable.py` reads as the API."""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from .errors import InvalidInputError
from .layouts import ANSWER_END, Prompt
from .records import Answer, RetrievedEdit
from .runtime.engine import TextStream
from .runtime.generation import FinishReason


def per_question_modes(mode: Any, n: int) -> list[Any]:
    """`mode` of `ask_many` / `score_many`: one for every question, or a list of one each."""
    modes = (list(mode) if isinstance(mode, Sequence) and not isinstance(mode, str)
             else [mode] * n)
    if len(modes) != n:
        raise InvalidInputError(f"{n} questions but {len(modes)} modes.")
    return modes


def check_sampling(do_sample: bool, temperature: Any) -> None:
    """`do_sample` / `temperature` of `ask`, `stream` and `ask_many`."""
    if do_sample and not (isinstance(temperature, (int, float)) and temperature > 0):
        raise InvalidInputError("temperature must be a number > 0 when do_sample=True.")


def answer_stop(stop: Sequence[str] | None, chat: bool) -> Sequence[str]:
    """`stop` of `ask` / `stream` / `ask_many`; None: where the answer ends. In a chat turn that
    is the model's end of turn (EOS), which instruct models emit after the reply (a reply may
    open with "The answer is:" and give it on the next line); inline, a small model goes on
    past the completed sentence, so the answer is its first line (`layouts.ANSWER_END`)."""
    if stop is None:
        return () if chat else ANSWER_END
    return stop


def per_question(values: Any, name: str, n: int) -> list[Any]:
    """`facts` / `distractors` of `ask_many`: None for all, or one entry (maybe None) each."""
    if values is None:
        return [None] * n
    if isinstance(values, str) or not isinstance(values, Sequence) or len(values) != n:
        raise InvalidInputError(f"{name} must be a list with one entry per question ({n}).")
    return list(values)


class AnswerStream:
    """What `EditableLM.stream()` returns: iterate it for the answer's text pieces as they are
    generated.

    The pieces concatenate to exactly the text `ask()` returns. `text`, `completion_tokens` and
    `finish_reason` are final once the stream is exhausted (`finish_reason` is None before, and
    after a cancel). `close()`, leaving a `for` loop over it early, or dropping it cancels the
    generation at its next step; `with lm.stream(q) as s:` closes it on exit.
    """

    def __init__(self, generation: TextStream, prompt: Prompt, edit: RetrievedEdit | None,
                 distractors: list[RetrievedEdit]) -> None:
        self._gen = generation
        self.prompt_tokens = len(prompt)
        self.mode = prompt.mode.value
        self.edit = edit
        self.distractors = distractors

    @property
    def text(self) -> str:
        return self._gen.text

    @property
    def completion_tokens(self) -> int:
        return self._gen.completion_tokens

    @property
    def finish_reason(self) -> FinishReason | None:
        return self._gen.finish_reason

    def __iter__(self) -> Iterator[str]:
        return iter(self._gen)

    def __next__(self) -> str:
        return next(self._gen)

    def close(self) -> None:
        """Cancel the generation and wait until it has stopped computing."""
        self._gen.close()

    def __enter__(self) -> AnswerStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def answer(self) -> Answer:
        """Run the stream to its end (if it is not already) and return the whole `Answer`."""
        for _ in self._gen:
            pass
        if self.finish_reason is None:
            raise InvalidInputError("This answer stream was cancelled; it has no whole answer.")
        return Answer(text=self.text, mode=self.mode, edit=self.edit,
                      distractors=self.distractors, prompt_tokens=self.prompt_tokens,
                      completion_tokens=self.completion_tokens,
                      finish_reason=self.finish_reason)
