"""Markdown tables of the memory-setting reports (`editkit eval --memory-size N --out ...`).

    .venv/bin/python scripts/memory_tables.py results/memory/*.json

One row per report: data set, mode, gate, memory size, records; ES/PS/NS/S through the memory,
the oracle S (the record's edit given, same run), and what reached the prompt per question kind.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROME = [("ES", "ES"), ("PS", "PS"), ("NS", "NS"), ("S", "S"), ("oracle_S", "oracle S")]
ZSRE = [("edit_acc", "edit"), ("rephrase_acc", "rephrase"), ("locality_acc", "loc (ROME)"),
        ("oracle_edit_acc", "oracle edit"), ("oracle_rephrase_acc", "oracle rephrase")]
ROUTES = [("reach_rewrite_own", "rewrite→own"), ("reach_paraphrase_own", "paraphrase→own"),
          ("reach_paraphrase_nothing", "paraphrase→nothing"),
          ("reach_neighborhood_own", "neighbour→own"),
          ("reach_neighborhood_other", "neighbour→other"),
          ("reach_edit_own", "edit→own"), ("reach_rephrase_own", "rephrase→own"),
          ("reach_locality_own", "locality→own"), ("reach_locality_rome_own", "loc?→own"),
          ("gate_precision", "gate P"), ("gate_recall", "gate R")]


def main(paths: list[str]) -> None:
    reports = [json.loads(Path(p).read_text()) for p in sorted(paths)]
    for fmt in sorted({r["format"] for r in reports}):
        rows = [r for r in reports if r["format"] == fmt]
        cols = ROME if fmt == "counterfact-rome" else ZSRE
        routes = [c for c in ROUTES if any(c[0] in r["metrics"] for r in rows)]
        head = ["data", "mode", "gate", "memory", "records", *(n for _, n in cols),
                *(n for _, n in routes)]
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for r in rows:
            m, cfg = r["metrics"], r["config"]
            cells = [Path(cfg["data"]).stem, cfg["mode"], r["settings"]["retrieval"]["gate"],
                     f"{cfg['memory_size']:,}", str(int(r["timing"]["records"]))]
            cells += [f"{m[k]['value']:.1f}" if k in m else "" for k, _ in cols + routes]
            print("| " + " | ".join(cells) + " |")
        print()


if __name__ == "__main__":
    main(sys.argv[1:])
