"""Evaluation reports: metrics as an lm-eval-style table and as JSON, with the settings they ran
with (retrieval, chat, decode, IKE variant), so a number can be traced to its configuration."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from .. import metrics
from ..fileio import atomic_write


class Report(BaseModel):
    """What every evaluation report holds: config, model, the `EditableLM` settings it ran with,
    metrics, timing and per-record details. Shared by `evaluate` and the multi-hop runner."""

    config: dict[str, Any]
    model: str
    ptokens: str  # `ptokens_label`: no machine's path (reports saved before it: the path)
    settings: dict[str, Any] = Field(default_factory=dict)  # empty in reports saved before it
    metrics: dict[str, metrics.MetricValue]
    timing: dict[str, float]
    records: list[dict[str, Any]] = Field(repr=False)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the full report as JSON, atomically."""
        return atomic_write(path, lambda p: p.write_text(self.model_dump_json(indent=1)))

    def settings_line(self) -> str:
        """The settings in one line, for the CLI and logs."""
        s = self.settings
        r = s.get("retrieval") or {}
        parts = [f"retrieval gate={r.get('gate')} top_k={r.get('top_k')} "
                 f"threshold={r.get('threshold')}",
                 f"chat={s.get('chat')}", f"decode_dtype={s.get('decode_dtype')}",
                 f"prefix_cache={s.get('prefix_cache')}",
                 f"quantization={s.get('quantization')}"]
        if s.get("ike"):
            parts.append(f"ike={s['ike']['variant']}")
        return " | ".join(parts)


class EvalReport(Report):
    """Metrics (lm-eval style table), timing and per-record details; `save()` writes JSON.
    `data` names the evaluated file without this machine's paths (`editkit.data_files.describe`:
    `editkit:data/...` for a packaged data set) and its SHA-256."""

    format: str
    data: dict[str, Any] | None = None  # None in reports saved before it

    def table(self) -> str:
        """A markdown table: metric, value, standard error, n, protocol."""
        lines = metrics.markdown_rows(self.metrics)
        t = self.timing
        lines.append(f"| prompt tokens / question | {t['prompt_tokens_per_question']:.0f} | | "
                     f"{int(t['questions'])} | |")
        lines.append(f"| ms / question | {t['ms_per_question']:.1f} | | {int(t['questions'])} | |")
        return "\n".join(lines)


def ptokens_label(lm: Any) -> str:
    """How a report names the P-Tokens `lm` ran with, without this machine's paths: a shipped
    set by its place in the package (`shipped (editkit:data/ptokens/<model>/m10)`, as
    `data_files.data_label` names packaged files), a P-Token directory of the user's by its
    name, "untrained: ..." / "given" as `lm.ptokens_source` says; then the rows' SHA-256
    (`PTokens.content_hash`), which tells two sets apart wherever they were loaded from."""
    from ..building import shipped_ptokens_dir
    from ..data_files import PACKAGED_PREFIX, data_label

    def portable(path: Path) -> str:
        label = data_label(path)
        return label if label.startswith(PACKAGED_PREFIX) else path.name

    source = lm.ptokens_source or "given"  # "": an EditableLM built around a PTokens object
    shipped = shipped_ptokens_dir(lm.name, lm.ptokens.m, getattr(lm, "quantization", None))
    if shipped is not None and str(shipped) in source:
        source = source.replace(str(shipped), portable(shipped))
    elif source != "given" and not source.startswith("untrained"):
        source = portable(Path(source))  # the P-Token directory the user gave
    return f"{source}, sha256 {lm.ptokens.content_hash()}"


def lm_settings(lm: Any) -> dict[str, Any]:
    """The `EditableLM` settings that can change a number: retrieval policy, chat framing, and the
    decode options (bf16/fp16 greedy decoding, prefix cache), which affect generation only;
    teacher-forced scoring is always the full-precision packed forward."""
    decode = getattr(lm, "decode_model", None)
    cache = getattr(lm, "prefix_cache", None)
    return {
        "retrieval": lm.retrieval.model_dump(),
        "chat": bool(lm.layouts.chat),
        "decode_dtype": (str(next(decode.parameters()).dtype).removeprefix("torch.")
                         if decode is not None else None),
        "prefix_cache": cache.max_entries if cache is not None else 0,
        "quantization": getattr(lm, "quantization", None),
    }
