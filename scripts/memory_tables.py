"""Markdown tables of the memory-setting reports (`editkit eval --memory-size N --out ...`).

    .venv/bin/python scripts/memory_tables.py results/memory/*.json
    .venv/bin/python scripts/memory_tables.py results/memory/grid-2026-11-30/*.json.gz
    .venv/bin/python scripts/memory_tables.py \\
        --unique-in src/editkit/data/eval/zsre/zsre-test.json \\
        results/memory/grid-2026-11-30/zs*.json.gz

One row per report: its file name, data set, mode, gate, memory size, records; ES/PS/NS/S through
the memory, the oracle S (the record's edit given, same run), what reached the prompt per question
kind, prompt tokens and milliseconds per question.

`--unique-in DATA` re-aggregates the reports on DATA over the records whose fact (`edit_key`) no
other record of DATA edits: for runs made before the memory setting kept one edit per fact, when
a second, contradicting edit of the same fact could sit in memory as a filler.
"""
from __future__ import annotations

import argparse
import gzip
import json
from collections import Counter
from pathlib import Path
from typing import Any

ROME = [("ES", "ES"), ("PS", "PS"), ("NS", "NS"), ("S", "S"), ("oracle_S", "oracle S")]
ZSRE = [("edit_acc", "edit"), ("rephrase_acc", "rephrase"), ("locality_acc", "loc (ROME)"),
        ("oracle_edit_acc", "oracle edit"), ("oracle_rephrase_acc", "oracle rephrase")]
ROUTES = [("reach_rewrite_own", "rewrite→own"), ("reach_paraphrase_own", "paraphrase→own"),
          ("reach_paraphrase_nothing", "paraphrase→nothing"),
          ("reach_neighborhood_own", "neighbour→own"),
          ("reach_neighborhood_other", "neighbour→other"),
          ("reach_edit_own", "edit→own"), ("reach_rephrase_own", "rephrase→own"),
          ("reach_rephrase_nothing", "rephrase→nothing"),
          ("reach_rephrase_other", "rephrase→other"), ("reach_portability_own", "portability→own"),
          ("reach_locality_own", "locality→own"), ("reach_locality_other", "locality→other"),
          ("gate_precision", "gate P"), ("gate_recall", "gate R")]


def _read(path: str) -> dict[str, Any]:
    return json.loads(gzip.open(path).read() if path.endswith(".gz") else Path(path).read_text())


def unique_subset(report: dict[str, Any], data: Path) -> dict[str, Any]:
    """`report` re-aggregated over the records whose fact no other record of `data` edits."""
    from editkit.datasets import load_records
    from editkit.eval import get_task

    _, recs = load_records(data)
    count = Counter(r.edit_key for r in recs)
    unique = {r.case_id for r in recs if count[r.edit_key] == 1}
    rows = [row for row in report["records"] if row["case_id"] in unique]
    task = get_task(report["config"].get("task") or report["format"])
    metrics = {**task.aggregate(rows), **task.memory_metrics(rows)}
    return {**report, "records": rows, "timing": {**report["timing"], "records": len(rows)},
            "metrics": {k: v.model_dump() for k, v in metrics.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("reports", nargs="+")
    ap.add_argument("--unique-in", type=Path, help="data file: keep its records with a unique "
                                                   "fact only")
    args = ap.parse_args()
    reports = [{**_read(p), "_file": Path(p).name.split(".")[0]} for p in sorted(args.reports)]
    if args.unique_in:
        reports = [unique_subset(r, args.unique_in)
                   if Path(r["config"]["data"]).name == args.unique_in.name else r
                   for r in reports]

    def task(r: dict[str, Any]) -> str:
        return r["config"].get("task") or r["format"]

    for name in sorted({task(r) for r in reports}):
        rows = [r for r in reports if task(r) == name]
        cols = ZSRE if rows[0]["format"] == "zsre" else ROME
        routes = [c for c in ROUTES if any(c[0] in r["metrics"] for r in rows)]
        head = ["report", "data", "mode", "gate", "memory", "records", *(n for _, n in cols),
                *(n for _, n in routes), "tok/q", "ms/q"]
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for r in rows:
            m, cfg = r["metrics"], r["config"]
            cells = [r["_file"], Path(cfg["data"]).stem, cfg["mode"],
                     r["settings"]["retrieval"]["gate"], f"{cfg['memory_size']:,}",
                     str(int(r["timing"]["records"]))]
            cells += [f"{m[k]['value']:.1f}" if k in m else "" for k, _ in cols + routes]
            cells += [f"{r['timing']['prompt_tokens_per_question']:.0f}",
                      f"{r['timing']['ms_per_question']:.0f}"]
            print("| " + " | ".join(cells) + " |")
        print()


if __name__ == "__main__":
    main()
