"""From generated tokens to the text a caller sees: `_Detokenizer` (ids to text, incrementally)
and `TextAssembler` (stop sequences, surrounding whitespace, what is safe to emit yet).

Kept apart from the decoders because it is the one piece that every engine shares: tokens
computed here (`_Run.emit` in `runtime.generation`) and text returned by a remote server
(`RemoteEngine` in `runtime.remote`) are cut and stripped by the same `TextAssembler`, so a
stream's pieces concatenate to exactly what a non-streamed call returns, on either engine.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["TextAssembler"]


class TextAssembler:
    """Turns generated text into the text a caller sees: cut at the first stop sequence after
    the answer's first non-blank character and stripped of surrounding whitespace, emitted
    incrementally so that streamed pieces concatenate to exactly what a non-streamed call returns
    (text that might be the start of a stop sequence, and trailing whitespace, are held back
    until they are known to stay)."""

    def __init__(self, stops: Sequence[str] = ()) -> None:
        self.stops = [s for s in stops if s]
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.buf = ""
        self.sent = 0
        self.started = False
        self.stopped = False
        self.text = ""  # everything emitted so far

    def feed(self, piece: str) -> str:
        """Add generated text; return the new text that is safe to emit."""
        if self.stopped:
            return ""
        self.buf += piece
        # A stop counts once the answer has begun: leading whitespace is stripped anyway, and a
        # model that opens with "\n" must not end a first-line answer before its first word.
        begun = len(self.buf) - len(self.buf.lstrip())
        hits = [i for i in (self.buf.find(s, max(begun, self.sent - len(s))) for s in self.stops)
                if i >= 0]
        if hits:
            self.buf = self.buf[:min(hits)]
            self.stopped = True
        return self._emit(final=self.stopped)

    def finish(self) -> str:
        """The rest of the text once generation has ended."""
        return self._emit(final=True)

    def _emit(self, final: bool) -> str:
        text = self.buf
        safe = text if final else text[: max(0, len(text) - self.hold)]
        end = len(safe.rstrip())
        start = self.sent if self.started else len(text) - len(text.lstrip())
        if end <= start:
            return ""
        self.started, self.sent = True, end
        self.text += text[start:end]
        return text[start:end]


class _Detokenizer:
    """Incremental decoding that adds up to `tokenizer.decode(all ids)`: the ids since the last
    newline are decoded together (so multi-token characters and word joins come out right), and
    a trailing incomplete character (U+FFFD) waits for the token that completes it."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.window: list[int] = []
        self.sent = 0  # characters of the window's text already returned

    def push(self, token: int) -> str:
        self.window.append(token)
        text = self.tokenizer.decode(self.window, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return ""
        new = text[self.sent:]
        if text.endswith("\n"):
            self.window, self.sent = [], 0
        else:
            self.sent = len(text)
        return new

    def flush(self) -> str:
        if not self.window:
            return ""
        text = self.tokenizer.decode(self.window, skip_special_tokens=True)
        new = text[self.sent:]
        self.window, self.sent = [], 0
        return new
