"""Multi-hop editing on MQuAKE, hop by hop with per-hop retrieval
(`editkit.eval.tasks.mquake_multihop`).

    .venv/bin/python scripts/mquake_multihop.py --modes ptokens ike prompt none --limit 30
    .venv/bin/python scripts/mquake_multihop.py --retrieval-only        # all cases, no LM
    .venv/bin/python scripts/mquake_multihop.py --summarize results/*-multihop-*-limit10.json

Per mode: prints a markdown table and writes results/<data>-multihop-<mode>-limit<N>.json
(`-memall` when all evaluated cases share one memory). The model is loaded once. The hop chain is
MQuAKE's own decomposition (oracle decomposition), see docs/results.md.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from editkit.data_files import data_file
from editkit.datasets import load_chain_records
from editkit.eval.hop_answering import HopForm
from editkit.eval.tasks.mquake_multihop import (
    MemoryScope,
    MultiHopConfig,
    MultiHopReport,
    retrieval_stats,
    run,
)
from editkit.layouts import Mode

DATA = data_file("mquake", "mquake-hard-test.json")
# columns of the cross-mode summary: (metric, header)
SUMMARY = [("single_shot_case", "single-shot (any of 3, exact)"),
           ("single_shot_score", "single-shot 2-way score"),
           ("cloze_chain", "per-hop cloze: multi-hop"), ("cloze_hop", "cloze hop acc"),
           ("cloze_retrieval", "cloze retrieval"),
           ("question_chain", "per-hop question: multi-hop"),
           ("question_hop", "question hop acc"), ("cloze_chain_score", "cloze chain 2-way score")]


def out_name(cfg: MultiHopConfig) -> str:
    parts = [cfg.data.stem, "multihop", cfg.mode.value]
    if cfg.limit:
        parts.append(f"limit{cfg.limit}")
    if cfg.memory is MemoryScope.ALL:
        parts.append("memall")
    return "-".join(parts)


def summary(reports: list[MultiHopReport]) -> str:
    """One row per mode: the headline metrics (value ± stderr, ×100)."""
    head = ["mode", "n"] + [h for _, h in SUMMARY] + ["prompt tok / hop", "s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in reports:
        m = r.metrics
        n = int(r.timing["cases"])
        cells = [r.config["mode"], str(n)]
        for key, _ in SUMMARY:
            cells.append(f"{m[key].value:.1f} ± {m[key].stderr:.1f}" if key in m else "–")
        toks = [h["prompt_tokens"] for rec in r.records
                for f in ("cloze", "question") if f"{f}_details" in rec
                for h in rec[f"{f}_details"]["gold"]]
        cells.append(f"{sum(toks) / len(toks):.0f}" if toks else "–")
        cells.append(f"{r.timing['seconds']:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--modes", nargs="+", default=["ptokens", "ike", "prompt", "none"],
                    choices=[m.value for m in Mode])
    ap.add_argument("--limit", type=int, default=30)
    ap.add_argument("--forms", nargs="+", default=[f.value for f in HopForm],
                    choices=[f.value for f in HopForm])
    ap.add_argument("--memory", default="case", choices=[s.value for s in MemoryScope])
    ap.add_argument("--max-new-tokens", type=int, default=10)
    ap.add_argument("--no-single-shot", action="store_true")
    ap.add_argument("--no-scoring", action="store_true")
    ap.add_argument("--out-dir", type=Path, default=Path("results"))
    ap.add_argument("--retrieval-only", action="store_true",
                    help="per-hop retrieval hit rates on every case, both memory scopes, no LM")
    ap.add_argument("--summarize", nargs="+", type=Path, metavar="JSON",
                    help="print the cross-mode summary of saved reports and exit")
    ap.add_argument("--decompose-probe", type=int, metavar="N",
                    help="ask the model to decompose the first N questions itself (MeLLo-style "
                         "zero-shot), save what it writes, and exit")
    args = ap.parse_args(argv)

    if args.summarize:
        print(summary([MultiHopReport.model_validate_json(p.read_text())
                       for p in args.summarize]))
        return 0

    if args.retrieval_only:
        from editkit.embedder import shared_embedder
        from editkit.retrieval import EditMemory

        records = load_chain_records(args.data)
        records = records[: args.limit] if args.limit else records
        print("| metric | value | stderr | n |\n|---|---|---|---|")
        found = {}
        for scope in MemoryScope:
            with EditMemory(None, embedder=shared_embedder()) as mem:
                for m in retrieval_stats(records, mem, scope, threshold=0.5).values():
                    print(f"| {m.name} | {m.value:.1f} | {m.stderr:.1f} | {m.n} |")
                    found[m.name] = m.model_dump()
        args.out_dir.mkdir(parents=True, exist_ok=True)
        path = args.out_dir / f"{args.data.stem}-multihop-retrieval.json"
        path.write_text(json.dumps({"data": str(args.data), "limit": args.limit,
                                    "threshold": 0.5, "metrics": found}, indent=1))
        return 0

    from editkit import EditableLM

    lm = EditableLM.from_pretrained(device="cpu")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    if args.decompose_probe:
        rows = []
        for rec in load_chain_records(args.data)[: args.decompose_probe]:
            q = rec.questions[0]
            inst = ("Break the question into simple sub-questions, one per line, each asking "
                    f"about one fact.\nQuestion: {q}\nSub-questions:\n1.")
            rows.append({"question": q, "oracle": [h.question for h in rec.single_hops],
                         **{("chat" if chat else "inline"):
                            lm.ask(inst, mode="none", chat=chat, max_new_tokens=48).text
                            for chat in (True, False)}})
        text = json.dumps(rows, indent=1, ensure_ascii=False)
        (args.out_dir / f"{args.data.stem}-multihop-decompose-probe.json").write_text(text)
        print(text)
        return 0
    reports = []
    for mode in args.modes:
        cfg = MultiHopConfig(data=args.data, mode=mode, limit=args.limit, forms=args.forms,
                             memory=args.memory, max_new_tokens=args.max_new_tokens,
                             single_shot=not args.no_single_shot, scoring=not args.no_scoring)
        t0 = time.perf_counter()

        def progress(i: int, n: int, mode: str = mode, t0: float = t0) -> None:
            print(f"  {mode}: {i}/{n} cases, {time.perf_counter() - t0:.0f} s",
                  file=sys.stderr, flush=True)

        report = run(lm, cfg, progress=progress)
        path = report.save(args.out_dir / f"{out_name(cfg)}.json")
        print(f"\n## {mode} ({path})\n\n{report.table()}\n", flush=True)
        reports.append(report)
    print(summary(reports))
    return 0


if __name__ == "__main__":
    sys.exit(main())
