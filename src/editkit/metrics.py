"""Knowledge-editing metrics (formulas in docs/metrics.md). Pure functions over per-record values.

Two protocols are kept apart by name, because the field mixes them up:
- `rome_*`: ROME/MEMIT CounterFact, comparing mean NLLs of ` target_new` and ` target_true`;
- `easyedit_*` / `zsre_*`: teacher-forced token-level argmax accuracy.

Every ± is a standard error of the mean over records (sample SD / √n; S: a bootstrap SE), not the
population SD that ROME's summarize.py prints as its second column (audit D-11).
"""
from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

from pydantic import BaseModel


class MetricValue(BaseModel):
    """A metric over records: value ×100 where it is a rate, its standard error (`stderr`: of the
    mean over records, not a standard deviation), and n."""

    name: str
    value: float
    stderr: float
    n: int
    protocol: str


def harmonic_mean(values: Sequence[float]) -> float:
    """S = n / Σ 1/v; 0 when any component is 0 (an edit that breaks one axis has failed)."""
    if not values or any(v <= 0 for v in values):
        return 0.0
    return len(values) / sum(1.0 / v for v in values)


def mean_stderr(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (sample std / √n)."""
    n = len(values)
    if n == 0:
        return float("nan"), float("nan")
    mean = sum(values) / n
    if n == 1:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def bootstrap_stderr(rows: Sequence[Sequence[float]], stat: Callable[[list[list[float]]], float],
                     *, samples: int = 1000, seed: int = 0) -> float:
    """Std of `stat` over record-level bootstrap resamples (for S, a non-linear statistic)."""
    if len(rows) < 2:
        return 0.0
    rng = random.Random(seed)
    n = len(rows)
    vals = [stat([list(rows[rng.randrange(n)]) for _ in range(n)]) for _ in range(samples)]
    m = sum(vals) / samples
    return math.sqrt(sum((v - m) ** 2 for v in vals) / (samples - 1))


# ---- ROME CounterFact ------------------------------------------------------------------------
def rome_success(nll_new: float, nll_true: float, *, neighbour: bool) -> float:
    """1 if the edit behaves on this prompt: new wins (rewrite/paraphrase), true wins
    (neighbour)."""
    return float(nll_true < nll_new) if neighbour else float(nll_true > nll_new)


def rome_magnitude(nll_new: float, nll_true: float, *, neighbour: bool) -> float:
    """P(new) − P(true) with P = exp(−mean NLL) (sign flipped for neighbours)."""
    diff = math.exp(-nll_new) - math.exp(-nll_true)
    return -diff if neighbour else diff


def rome_scores(per_record: Sequence[dict[str, float]]) -> dict[str, MetricValue]:
    """ES, PS, NS (×100), S and magnitudes from per-record means ('es', 'ps', 'ns', 'em', ...)."""
    out: dict[str, MetricValue] = {}
    n = len(per_record)
    for key, name in (("es", "ES"), ("ps", "PS"), ("ns", "NS")):
        m, se = mean_stderr([r[key] * 100 for r in per_record])
        out[name] = MetricValue(name=name, value=m, stderr=se, n=n, protocol="rome")
    rows = [[r["es"], r["ps"], r["ns"]] for r in per_record]

    def s_of(rs: list[list[float]]) -> float:
        return harmonic_mean([100 * sum(r[i] for r in rs) / len(rs) for i in range(3)])

    out["S"] = MetricValue(name="S", value=s_of([list(r) for r in rows]),
                           stderr=bootstrap_stderr(rows, s_of), n=n, protocol="rome")
    for key, name in (("em", "EM"), ("pm", "PM"), ("nm", "NM")):
        m, se = mean_stderr([r[key] * 100 for r in per_record])
        out[name] = MetricValue(name=name, value=m, stderr=se, n=n, protocol="rome")
    return out


# ---- token accuracy (EasyEdit, zsRE) -----------------------------------------------------------
def token_accuracy(argmax: Sequence[int], target: Sequence[int]) -> float:
    """Share of target tokens that are the teacher-forced argmax at their position."""
    if not target:
        raise ValueError("empty target")
    return sum(int(a == t) for a, t in zip(argmax, target, strict=True)) / len(target)


def unchanged_share(argmax: Sequence[int], reference: Sequence[int]) -> float:
    """EasyEdit locality: share of argmax tokens equal to the unedited model's argmax tokens."""
    if not reference:
        raise ValueError("empty reference")
    return sum(int(a == b) for a, b in zip(argmax, reference, strict=True)) / len(reference)


def rate_scores(per_record: Sequence[dict[str, float]], keys: Sequence[tuple[str, str]],
                protocol: str) -> dict[str, MetricValue]:
    """Mean ×100 and stderr of per-record rates; each key over the records that have it (e.g.
    portability, which only some zsRE records carry); keys no record has are left out."""
    out = {}
    for key, name in keys:
        vals = [r[key] * 100 for r in per_record if key in r]
        if vals:
            m, se = mean_stderr(vals)
            out[name] = MetricValue(name=name, value=m, stderr=se, n=len(vals),
                                    protocol=protocol)
    return out


def proportion(name: str, hits: int, n: int, protocol: str) -> MetricValue:
    """A pooled proportion ×100 over n trials, with its binomial standard error."""
    p = hits / n
    return MetricValue(name=name, value=100 * p, stderr=100 * math.sqrt(p * (1 - p) / n), n=n,
                       protocol=protocol)


# ---- MQuAKE -----------------------------------------------------------------------------------
def contains_answer(generation: str, answers: Sequence[str]) -> bool:
    """Legacy MQuAKE check, recorded beside the real one: the raw generation contains an alias as
    a case-insensitive substring. Not MQuAKE's criterion (it counts 'Kyiv, Ukraine' for 'UK');
    `editkit.eval.matching.exact_match` is (docs/metrics.md)."""
    text = generation.lower()
    return any(a.strip() and a.strip().lower() in text for a in answers)


def markdown_rows(values: dict[str, MetricValue]) -> list[str]:
    """The header and one row per metric of a report's markdown table."""
    lines = ["| metric | value | ± (std. error) | n | protocol |", "|---|---|---|---|---|"]
    for m in values.values():
        lines.append(f"| {m.name} | {m.value:.1f} | {m.stderr:.1f} | {m.n} | {m.protocol} |")
    return lines
