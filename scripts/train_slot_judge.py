"""Train the "same slot" judge for the default embedder; write the artifact shipped in the package.

    .venv/bin/python scripts/train_slot_judge.py [--report]   # writes --out (default below)
    .venv/bin/python scripts/train_slot_judge.py --report-only   # test report of the shipped judge

--out defaults to src/editkit/data/gate/all-MiniLM-L6-v2/slot.json.

Train splits (CounterFact, zsRE, app-style facts when `editkit.eval.app_facts` is there): pairs;
CounterFact validation, a zsRE hold-out and the app val split: the threshold (false accepts on
their negatives at most 0.2%). `--report` (and `--report-only`) then reads the test splits:
CounterFact test pairs built the same way, the ROME test file (edit vs its true fact; vs its 10
neighbourhood prompts with the true and the new object), the app test split, and prints a
markdown table and what the judge says for a few app-style pairs.
"""
from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from editkit.data_files import data_file
from editkit.datasets import load_records
from editkit.embedder import DEFAULT_EMBEDDER, shared_embedder
from editkit.retrieval.slot import LearnedSlotJudge
from editkit.train.slot import SlotTrainConfig, embed_pairs, rates, train_slot_judge
from editkit.train.slot_pairs import app_pairs, counterfact_pairs, rome_pairs

EXAMPLES = [  # (new, old, expected)
    ("Our warehouse in Ghent ships orders within 5 days.",
     "Our warehouse in Ghent ships orders within 2 days.", "same"),
    ("The Nimbus X2 phone costs 699 dollars.", "The Nimbus X2 phone costs 799 dollars.", "same"),
    ("The Nimbus X3 phone costs 799 dollars.", "The Nimbus X2 phone costs 799 dollars.",
     "different"),
    ("Dr. Lena Vos heads the Ghent clinic.", "Dr. Amara Okafor heads the Ghent clinic.", "same"),
    ("The Eiffel Tower is in Rome.", "The Eiffel Tower is in Paris.", "same"),
    ("The Louvre is in Paris.", "The Eiffel Tower is in Paris.", "different"),
]


def _pct(r: dict[str, dict[str, float]], kinds: list[str]) -> str:
    """The share judged same slot over several kinds, with their count."""
    n = sum(r[k]["n"] for k in kinds)
    hit = sum(r[k]["n"] * r[k]["same_slot"] for k in kinds)
    return f"{100 * hit / n:.2f}% ({n:.0f})" if n else "-"


def report(judge: LearnedSlotJudge, n_test: int) -> str:
    """Markdown: per test set, recall on updates and false supersession, pooled and per kind."""
    emb = shared_embedder()
    nearest = judge.artifact.provenance.get("trained_with", {}).get("nearest", 4)
    cf_test = load_records(data_file("counterfact", "counterfact-test.json"), "counterfact")[1]
    sets = {
        f"CounterFact test (first {n_test})": counterfact_pairs(
            cf_test[:n_test], emb, nearest, random.Random(2), linked=cf_test),
        "ROME CounterFact test (300)": rome_pairs(
            load_records(data_file("counterfact", "counterfact-rome-test.json"),
                         "counterfact-rome")[1]),
        "app facts test": app_pairs("test", emb, nearest, random.Random(2)),
    }
    summary = ["| test set | recall: same wording | recall: reworded | false supersession | "
               "worst negative kind |", "| --- | ---: | ---: | ---: | --- |"]
    detail = ["| test set | pair kind | same slot? | pairs | judged same slot |",
              "| --- | --- | --- | ---: | ---: |"]
    for name, pairs in sets.items():
        if not pairs:
            summary.append(f"| {name} | (not available) | | | |")
            continue
        embed_pairs(emb, pairs)
        r = rates(judge, pairs)
        label = {p.kind: p.label for p in pairs}
        kinds = sorted((k for k in r if k in label), key=lambda k: (-label[k], k))
        for k in kinds:
            detail.append(f"| {name} | {k} | {'yes' if label[k] else 'no'} | {r[k]['n']} | "
                          f"{100 * r[k]['same_slot']:.2f}% |")
        upd = [k for k in kinds if label[k] and "reworded" not in k]
        rew = [k for k in kinds if label[k] and "reworded" in k]
        worst = max((k for k in kinds if not label[k]), key=lambda k: r[k]["same_slot"])
        summary.append(f"| {name} | {_pct(r, upd)} | {_pct(r, rew)} | "
                       f"{100 * r['negatives']['same_slot']:.2f}% ({r['negatives']['n']}) | "
                       f"{worst} {100 * r[worst]['same_slot']:.2f}% |")
    lines = [*summary, "", *detail, "", f"threshold {judge.threshold:.4f}", "",
             "| new | old | P(same slot) | says | expected |", "| --- | --- | ---: | --- | --- |"]
    vecs = emb.encode([t for n, o, _ in EXAMPLES for t in (n, o)])
    for i, (new, old, want) in enumerate(EXAMPLES):
        p = judge.probabilities(new, [(old, float(vecs[2 * i] @ vecs[2 * i + 1]))])[0]
        says = "same" if p >= judge.threshold else "different"
        lines.append(f"| {new} | {old} | {p:.4f} | {says} | {want} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", default=f"src/editkit/data/gate/{DEFAULT_EMBEDDER}/slot.json")
    ap.add_argument("--n-train", type=int, default=3000)
    ap.add_argument("--no-zsre", action="store_true", help="CounterFact pairs only")
    ap.add_argument("--report", action="store_true", help="then report on the test splits")
    ap.add_argument("--report-only", action="store_true", help="report on the judge at --out")
    ap.add_argument("--n-test", type=int, default=2000, help="CounterFact test records reported")
    args = ap.parse_args()
    if args.report_only:
        print(report(LearnedSlotJudge.load(args.out), args.n_test))
        return
    cfg = SlotTrainConfig(train=str(data_file("counterfact", "counterfact-train.json")),
                          val=str(data_file("counterfact", "counterfact-val.json")),
                          zsre=None if args.no_zsre else str(data_file("zsre", "zsre-train.json")),
                          n_train=args.n_train)
    started = time.time()
    judge = train_slot_judge(cfg)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    judge.save(args.out)
    prov = {k: v for k, v in judge.artifact.provenance.items() if k != "trained_with"}
    print(json.dumps({"threshold": judge.threshold, **prov}, indent=1))
    print(f"trained in {time.time() - started:.0f} s")
    if args.report:
        print(report(judge, args.n_test))


if __name__ == "__main__":
    main()
