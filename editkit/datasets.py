"""Typed records for the published knowledge-editing formats, read as they are."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import DatasetError


class CounterFactRecord(BaseModel):
    """EasyEdit CounterFact: one rewrite with one rephrase and one locality prompt."""

    model_config = ConfigDict(extra="ignore")
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
        """The edit as a sentence: prompt followed by the new object."""
        return f"{self.prompt} {self.target_new}"


def _read_json_list(path: str | os.PathLike[str]) -> list[Any]:
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"Data file not found: {p}")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{p} is not valid JSON: {exc}") from exc
    if not isinstance(data, list):
        raise DatasetError(f"{p} must hold a JSON list of records, found {type(data).__name__}.")
    return data


def load_counterfact(path: str | os.PathLike[str]) -> list[CounterFactRecord]:
    """Read an EasyEdit-format CounterFact file; a bad record names its index and field."""
    out = []
    for i, raw in enumerate(_read_json_list(path)):
        try:
            out.append(CounterFactRecord.model_validate(raw))
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(x) for x in err["loc"])
            raise DatasetError(f"{path}: record {i} is not EasyEdit CounterFact: field "
                               f"{field!r}: {err['msg']}") from exc
    return out
