"""What a fact may contain before it reaches a prompt: the `FactPolicy` (prompt-injection guard).

A fact is data: one statement about the world. Text that steers the prompt itself has no place in
it: the tokenizer's special-token strings (`<|im_end|>`, `<|endoftext|>`), P-Token markers
(`<END_EDIT_0>`), chat-role tags of common templates (`<|im_start|>system`, `[INST]`,
`<<SYS>>`), and the markers of editkit's own plain/IKE layout (`New Fact:`, `Prompt:`). editkit
tokenizes user text with `split_special_tokens=True`, so none of these ever becomes a control id;
the policy refuses them anyway because, read as plain text, a spoofed `Prompt: <question> <answer>`
line is a fake demonstration the model copies (measured in docs/reliability.md).

The policy is strict by default on `EditableLM`: `edit()` and explicit `fact=` / `distractors=`
raise `UnsafeFactError`; edits retrieved from a memory written by someone else are left out of the
prompt (or raise, with `on_retrieved="raise"`). `FactPolicy.off()` turns every check off.
It does not (cannot) stop a fact from simply *claiming* something: a fact that says "X is Y" is an
edit, which is what in-context editing is for.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator

from .errors import UnsafeFactError
from .layouts import LAYOUT_LABELS

# <BEGIN_EDIT_0>, <END_EDIT_12>, < end_edit >, ... : any spelling of editkit's P-Token names
PTOKEN_MARKER = re.compile(r"<\s*/?\s*(?:BEGIN|END)_EDIT(?:_\d+)?\s*>", re.IGNORECASE)
# ChatML / Llama-3 / Phi (<|im_start|>, <|eot_id|>, <|system|>), Llama-2 ([INST], <<SYS>>), Gemma
ROLE_MARKER = re.compile(r"<\|[A-Za-z0-9_]{1,40}\|>|\[/?INST\]|<</?SYS>>|<(?:start|end)_of_turn>",
                         re.IGNORECASE)


def _label_pattern(label: str) -> str:
    """`New Fact:` -> `\\bNew\\s+Fact\\s*:`: any spacing and (with IGNORECASE) any case."""
    words = label.rstrip(":").split()
    return r"\b" + r"\s+".join(re.escape(w) for w in words) + r"\s*:"


# the labels of the plain and IKE layouts (`New Fact: {fact}\nPrompt: {question}`), from layouts
LAYOUT_MARKER = re.compile("|".join(_label_pattern(x) for x in LAYOUT_LABELS), re.IGNORECASE)


class FactPolicy(BaseModel):
    """Which prompt-control text a fact (or distractor) is refused for. Strict by default."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    special_tokens: bool = True  # the tokenizer's special / added token strings
    ptoken_markers: bool = True  # <BEGIN_EDIT_i>, <END_EDIT_i> and the loaded P-Tokens' names
    role_markers: bool = True  # chat-template role tags (ChatML, Llama 2/3, Gemma, Phi)
    layout_markers: bool = True  # `New Fact:` and `Prompt:` (editkit's plain / IKE layout)
    single_line: bool = False  # refuse line breaks too (off: see docs/reliability.md)
    extra_patterns: tuple[str, ...] = ()  # further regular expressions to refuse
    on_retrieved: Literal["skip", "raise"] = "skip"  # unsafe edits found in memory at ask time

    @field_validator("extra_patterns")
    @classmethod
    def _compiles(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for p in value:
            try:
                re.compile(p)
            except re.error as exc:
                raise ValueError(
                    f"extra pattern {p!r} is not a regular expression: {exc}") from None
        return value

    @classmethod
    def off(cls) -> FactPolicy:
        """Accept any text that passes basic validation (the behaviour before the policy)."""
        return cls(special_tokens=False, ptoken_markers=False, role_markers=False,
                   layout_markers=False, single_line=False)

    @property
    def enabled(self) -> bool:
        return any((self.special_tokens, self.ptoken_markers, self.role_markers,
                    self.layout_markers, self.single_line, bool(self.extra_patterns)))

    def violations(self, text: str, *, special: Iterable[str] = (),
                   ptoken_names: Iterable[str] = ()) -> list[str]:
        """What in `text` the policy refuses (empty: the text is acceptable)."""
        found: list[str] = []
        specials = {s for s in special if s and s in text} if self.special_tokens else set()
        found += [f"the special token {s!r}" for s in sorted(specials)]
        if self.ptoken_markers:
            marks = {m.group(0) for m in PTOKEN_MARKER.finditer(text)}
            marks |= {n for n in ptoken_names if n and n in text}
            found += [f"the P-Token marker {m!r}" for m in sorted(marks)]
        if self.role_markers:
            found += [f"the chat-role marker {m!r}"
                      for m in sorted({m.group(0) for m in ROLE_MARKER.finditer(text)} - specials)]
        if self.layout_markers:
            found += [f"the layout marker {m!r}"
                      for m in sorted({m.group(0) for m in LAYOUT_MARKER.finditer(text)})]
        if self.single_line and "\n" in text:
            found.append("a line break")
        found += [f"text matching {p!r}" for p in self.extra_patterns if re.search(p, text)]
        return found

    def check(self, text: str, what: str = "fact", **kw: Any) -> None:
        """Raise `UnsafeFactError` naming what was found, if the policy refuses `text`."""
        found = self.violations(text, **kw)
        if found:
            shown = text if len(text) <= 80 else text[:77] + "..."
            raise UnsafeFactError(
                f"{what} {shown!r} contains {', '.join(found[:4])}: a fact is data, not prompt "
                "control. Remove it, or pass a looser FactPolicy (e.g. "
                "EditableLM(..., fact_policy=FactPolicy.off())).")


def tokenizer_special_strings(tokenizer: Any) -> tuple[str, ...]:
    """The special-token strings of a tokenizer: declared specials plus added special tokens."""
    names = set(getattr(tokenizer, "all_special_tokens", None) or ())
    for tok in (getattr(tokenizer, "added_tokens_decoder", None) or {}).values():
        if getattr(tok, "special", False):
            names.add(str(tok.content))
    return tuple(sorted(n for n in names if len(n) > 1))
