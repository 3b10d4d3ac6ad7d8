"""Typed records for the published knowledge-editing formats, read as they are.

- counterfact-rome (ROME CounterFact): requested_rewrite{prompt, subject, target_new.str,
  target_true.str}, paraphrase_prompts, neighborhood_prompts
- counterfact (EasyEdit CounterFact): case_id, prompt, subject, target_new, ground_truth,
  rephrase_prompt, locality_prompt, locality_ground_truth
- zsre (MEND/EasyEdit zsRE): subject, src, rephrase, alt, answers, loc, loc_ans, portability
  (optional)
- mquake (MQuAKE): case_id, requested_rewrite[], questions, new_answer, new_answer_alias

`load_chain_records` reads the same MQuAKE files with the hop decompositions (`single_hops`,
`new_single_hops`) that the hop-by-hop evaluation needs (`MquakeChainRecord`).
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import DatasetError
from .fileio import read_utf8

Format = Literal["counterfact-rome", "counterfact", "zsre", "mquake"]


def _valid_unicode(value: Any) -> Any:
    """Refuse strings that cannot be encoded (JSON `\\ud800` escapes): tokenizers reject them."""
    for v in value if isinstance(value, list) else [value]:
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("text contains invalid Unicode (a lone surrogate)") from None
    return value


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore")

    @field_validator("*")
    @classmethod
    def check_unicode(cls, value: Any) -> Any:
        return _valid_unicode(value)


class CounterFactRecord(_Record):
    """EasyEdit CounterFact: one rewrite with one rephrase and one locality prompt."""

    case_id: int
    prompt: str
    subject: str
    target_new: str
    ground_truth: str
    rephrase_prompt: str
    locality_prompt: str
    locality_ground_truth: str

    @property
    def fact(self) -> str:
        """The edit as IKE writes it: prompt followed by the new object."""
        return f"{self.prompt} {self.target_new}"

    @property
    def edit_key(self) -> tuple[str, ...]:
        """What the edit changes (see `edit_key`): subject and relation wording."""
        return edit_key(self.subject, self.prompt)


def edit_key(subject: str, relation: str | None = None) -> tuple[str, ...]:
    """Two records with the same key edit the same fact (to different new objects, usually).

    The memory setting of the evaluation keeps one edit per key in memory: with two
    contradicting edits of one fact stored, which one a question "should" reach is undefined,
    and the routing metrics would count the other as a retrieval failure.
    """
    subj = subject.strip().casefold()
    if relation is None:
        return (subj,)
    return (subj, relation.replace(subject, "{}").strip().casefold())



def one_edit_per_fact(usable: Sequence[Any]) -> tuple[list[Any], list[tuple[Any, str]]]:
    """The first record of each `edit_key`, and the later ones with the reason they are left out
    (stored together, they would be contradicting edits of one fact: the evaluation's memory
    setting and the relevance gate's training both keep one)."""
    first: dict[tuple[str, ...], int] = {}
    kept, dropped = [], []
    for r in usable:
        if r.edit_key in first:
            dropped.append((r, f"edits the same fact as record {first[r.edit_key]} (memory "
                               "setting: one edit per fact in memory)"))
        else:
            first[r.edit_key] = r.case_id
            kept.append(r)
    return kept, dropped


class _Target(_Record):
    text: str = Field(alias="str", min_length=1)


class RomeRewrite(_Record):
    prompt: str = Field(pattern=r"\{\}")
    subject: str
    target_new: _Target
    target_true: _Target
    relation_id: str | None = None
    question: str | None = None

    @model_validator(mode="after")
    def _formats(self) -> RomeRewrite:
        try:
            self.prompt.format(self.subject)
        except (IndexError, KeyError, ValueError, AttributeError):
            raise ValueError(f"prompt {self.prompt[:80]!r} must hold one '{{}}' for the subject "
                             "and no other '{' or '}' (write them as '{{' and '}}')") from None
        return self

    @property
    def text(self) -> str:
        return self.prompt.format(self.subject)

    @property
    def fact(self) -> str:
        return f"{self.text} {self.target_new.text}"


class RomeCounterFactRecord(_Record):
    """ROME CounterFact: a rewrite with 2 paraphrase and 10 neighbourhood prompts."""

    case_id: int
    requested_rewrite: RomeRewrite
    paraphrase_prompts: list[str] = Field(min_length=1)  # the metrics need PS and NS
    neighborhood_prompts: list[str] = Field(min_length=1)

    @property
    def fact(self) -> str:
        return self.requested_rewrite.fact

    @property
    def edit_key(self) -> tuple[str, ...]:
        """What the edit changes (see `edit_key`): subject and relation wording (the prompt
        template, so that it matches the key of the same edit in EasyEdit format)."""
        rw = self.requested_rewrite
        return edit_key(rw.subject, rw.prompt)


class Portability(_Record):
    new_question: str = Field(alias="New Question")
    new_answer: str = Field(alias="New Answer")


class ZsreRecord(_Record):
    """MEND/EasyEdit zsRE: a question, its new answer, a rephrase, an NQ locality question."""

    subject: str
    src: str
    rephrase: str
    alt: str
    answers: list[str]
    loc: str
    loc_ans: str
    portability: Portability | None = None
    case_id: int = -1  # zsRE has no ids: the loader numbers records by position

    @property
    def fact(self) -> str:
        return f"{self.src} {self.alt}"

    @property
    def edit_key(self) -> tuple[str, ...]:
        """What the edit changes (see `edit_key`): the subject alone. zsRE asks about one subject
        in several records with reworded questions and different new answers ("What company
        published Bioscience Horizons?" / "What business published ...?"), so the subject is
        the only reliable key."""
        return edit_key(self.subject)

    def as_counterfact(self) -> CounterFactRecord:
        """The same edit in CounterFact's shape, so one IKE demonstration builder serves both."""
        return CounterFactRecord(case_id=self.case_id, prompt=self.src, subject=self.subject,
                                 target_new=self.alt, ground_truth=self.answers[0]
                                 if self.answers else "", rephrase_prompt=self.rephrase,
                                 locality_prompt=self.loc, locality_ground_truth=self.loc_ans)


class MquakeRecord(_Record):
    """MQuAKE: several rewrites per case and multi-hop questions answered after all of them."""

    case_id: int
    requested_rewrite: list[RomeRewrite] = Field(min_length=1)
    questions: list[str] = Field(min_length=1)
    new_answer: str
    new_answer_alias: list[str] = Field(default_factory=list)

    @property
    def facts(self) -> list[str]:
        return [r.fact for r in self.requested_rewrite]

    @property
    def fact(self) -> str:
        return self.facts[0]


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


AnyRecord = CounterFactRecord | RomeCounterFactRecord | ZsreRecord | MquakeRecord
_MODELS: dict[str, type[_Record]] = {
    "counterfact-rome": RomeCounterFactRecord, "counterfact": CounterFactRecord,
    "zsre": ZsreRecord, "mquake": MquakeRecord,
}


def _read_json_list(path: str | os.PathLike[str]) -> list[Any]:
    p = Path(path)
    text = read_utf8(p, what="Data file", error=DatasetError)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{p} is not valid JSON: {exc}") from exc
    except RecursionError:
        raise DatasetError(f"{p} is not a data file: its JSON is nested too deeply.") from None
    if not isinstance(data, list) or not data:
        raise DatasetError(f"{p} must hold a non-empty JSON list of records.")
    if not all(isinstance(r, dict) for r in data):
        raise DatasetError(f"{p}: every record must be a JSON object.")
    return data


def detect_format(record: dict[str, Any]) -> Format:
    """Tell the published format from one record's keys."""
    rw = record.get("requested_rewrite")
    if isinstance(rw, list):
        return "mquake"
    if isinstance(rw, dict):
        return "counterfact-rome"
    if "src" in record and "alt" in record:
        return "zsre"
    if "prompt" in record and "target_new" in record:
        return "counterfact"
    raise DatasetError(
        f"Unknown data format (keys: {sorted(record)[:12]}). Expected ROME CounterFact "
        "(requested_rewrite), EasyEdit CounterFact (prompt, target_new, ...), zsRE (src, alt, "
        "...) or MQuAKE (requested_rewrite as a list).")


def load_records(path: str | os.PathLike[str], fmt: Format | None = None,
                 ) -> tuple[Format, list[Any]]:
    """Read a data file in any supported format; a bad record names its index and field."""
    if fmt is not None and fmt not in _MODELS:
        raise DatasetError(f"Unknown data format {fmt!r}; choose one of: {', '.join(_MODELS)}.")
    raw = _read_json_list(path)
    if fmt is None:
        try:
            fmt = detect_format(raw[0])
        except DatasetError as exc:
            raise DatasetError(f"{path}: record 0: {exc}") from None
    out = _validate(path, raw, _MODELS[fmt], f"is not {fmt}")
    for i, rec in enumerate(out):
        if isinstance(rec, ZsreRecord):
            rec.case_id = i
    return fmt, out


def _validate(path: str | os.PathLike[str], raw: list[Any], model: type[BaseModel],
              what: str) -> list[Any]:
    """Validate every record; the first bad one raises a DatasetError naming its index and
    field."""
    out = []
    for i, r in enumerate(raw):
        try:
            out.append(model.model_validate(r))
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(x) for x in err["loc"])
            raise DatasetError(f"{path}: record {i} {what}: field {field!r}: "
                               f"{err['msg']}") from exc
    return out


def load_chain_records(path: str | os.PathLike[str]) -> list[MquakeChainRecord]:
    """Read an MQuAKE file with its hop decompositions (the published format, unchanged)."""
    return _validate(path, _read_json_list(path), MquakeChainRecord, "lacks MQuAKE hop data")


def load_counterfact(path: str | os.PathLike[str]) -> list[CounterFactRecord]:
    """Read an EasyEdit-format CounterFact file."""
    return load_records(path, "counterfact")[1]

