"""Tables behind docs/results.md "Trained P-Tokens": the m sweep, the S-vs-m plot, the teacher-cache
speedup and the amortisation of training against IKE's per-question cost.

    .venv/bin/python scripts/ptokens_report.py [--latency N]

Reads the shipped artifacts (src/editkit/data/ptokens/<model>/m*/ptokens_config.json, which record
their training time) and results/counterfact-rome-test-ptokens-m*.json (written by
`editkit eval --ptokens DIR --out ...`). With --latency N it also times `score()` on N ROME
questions for P-Tokens and IKE in this run (a fresh edit per question, nothing cached) so the
amortisation compares numbers measured side by side.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "src" / "editkit" / "data" / "ptokens" / "SmolLM2-135M-Instruct"
RESULTS = ROOT / "results"


def sweep() -> list[dict]:
    rows = []
    for cfg_path in sorted(SHIPPED.glob("m*/ptokens_config.json"),
                           key=lambda p: int(p.parent.name[1:])):
        m = int(cfg_path.parent.name[1:])
        tr = json.loads(cfg_path.read_text())["training"]
        res = RESULTS / f"counterfact-rome-test-ptokens-m{m}.json"
        metrics = json.loads(res.read_text())["metrics"] if res.is_file() else {}
        timing = json.loads(res.read_text())["timing"] if res.is_file() else {}
        rows.append({"m": m, "best_epoch": tr["best_epoch"], "seconds": tr["seconds"],
                     "teacher_seconds": tr["teacher_seconds"],
                     "epoch_seconds": tr.get("epoch_seconds"),
                     "val": tr.get("best_val_scores") or {},
                     "test": {k: metrics[k]["value"] for k in ("ES", "PS", "NS", "S")
                              if k in metrics},
                     "stderr_S": metrics.get("S", {}).get("stderr"),
                     "prompt_tokens": timing.get("prompt_tokens_per_question")})
    return rows


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r["test"]]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ms = [r["m"] for r in rows]
    for key, style in (("S", "o-"), ("ES", "s--"), ("PS", "^--"), ("NS", "v--")):
        ax.plot(ms, [r["test"][key] for r in rows], style, label=key)
    ax.set_xlabel("m (begin/end P-Token pairs)")
    ax.set_ylabel("score on counterfact-rome-test (%)")
    ax.set_xticks(ms)
    ax.legend(ncol=4, fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def latency(n: int) -> dict[str, float]:
    """Median seconds per score() call, P-Tokens vs IKE, same process, fresh edit per question."""
    from editkit import EditableLM
    from editkit.data_files import data_file
    from editkit.datasets import load_records

    records = load_records(data_file("counterfact", "counterfact-rome-test.json"))[1][:n]
    lm = EditableLM.from_pretrained(device="cpu")
    lm.score("warm up", ["a"], mode="ptokens")  # first-call costs (lazy imports, allocations)
    out = {}
    for mode in ("ptokens", "ike"):
        times = []
        for r in records:
            rw = r.requested_rewrite
            lm.clear()
            lm.edit(f"{rw.text} {rw.target_new.text}.")
            t = time.perf_counter()
            lm.score(rw.text, [rw.target_new.text, rw.target_true.text], mode=mode)
            times.append(time.perf_counter() - t)
        times.sort()
        out[mode] = times[len(times) // 2]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--latency", type=int, default=0)
    args = ap.parse_args()
    rows = sweep()
    print("| m | best epoch | train time (s) | val S | ES | PS | NS | S | prompt tokens/q |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        t = r["test"]
        cells = [f"{t[k]:.1f}" if k in t else "–" for k in ("ES", "PS", "NS", "S")]
        print(f"| {r['m']} | {r['best_epoch']} | {r['seconds']:.0f} | "
              f"{r['val'].get('S', float('nan')):.1f} | " + " | ".join(cells)
              + f" | {r['prompt_tokens'] or float('nan'):.1f} |")
    if rows:
        plot(rows, ROOT / "docs" / "s_vs_m.png")
        print("\nplot: docs/s_vs_m.png")
        # every m trains on the same pairs, so the teacher was computed once (in the first run)
        # and read from the cache by the others: its cost is the largest teacher_seconds
        teacher = max(r["teacher_seconds"] for r in rows)
        print(f"\nTeacher cache: the shared teacher took {teacher:.0f} s to compute once; the "
              "other runs read it in "
              + ", ".join(f"{r['teacher_seconds']:.1f} s (m={r['m']})" for r in rows
                          if r["teacher_seconds"] < teacher))
        for r in rows:
            if r["epoch_seconds"]:
                e = r["epoch_seconds"]
                print(f"- m={r['m']}: student epoch {e:.0f} s; recomputing the teacher every "
                      f"epoch would make it {e + teacher:.0f} s ({(e + teacher) / e:.2f}x)")
    if args.latency:
        lat = latency(args.latency)
        print(f"\nscore() latency, median of {args.latency} questions, same run: "
              f"P-Tokens {lat['ptokens'] * 1000:.0f} ms, IKE {lat['ike'] * 1000:.0f} ms "
              f"({lat['ike'] / lat['ptokens']:.1f}x)")
        saved = lat["ike"] - lat["ptokens"]
        print("\n| m | training (s) | saved per question (ms) | questions to pay back |")
        print("|---|---|---|---|")
        for r in rows:
            print(f"| {r['m']} | {r['seconds']:.0f} | {saved * 1000:.0f} | "
                  f"{r['seconds'] / saved:,.0f} |")


if __name__ == "__main__":
    main()
