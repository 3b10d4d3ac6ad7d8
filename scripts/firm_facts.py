"""Write the firm-facts split: the CounterFact test records whose true object the unedited default
model holds most firmly.

    .venv/bin/python scripts/firm_facts.py [--share 0.1]
        # -> src/editkit/data/eval/counterfact-rome-test-firm10.json

Firmness is the unedited model's margin on the rewrite prompt: mean log-probability of
` target_true` minus that of ` target_new` (the quantity ROME's ES compares). The file keeps the
published ROME format, records in the test split's order, and adds `unedited_margin` to each (the
loaders ignore unknown fields). Only the test split is read, and only to rank it: the split is for
reporting, like the test file it comes from.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from editkit.data_files import data_file

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--share", type=float, default=0.1)
    args = ap.parse_args()
    from editkit import EditableLM

    src = data_file("counterfact", "counterfact-rome-test.json")
    raw = json.loads(src.read_text(encoding="utf-8"))
    lm = EditableLM.from_pretrained()
    for r in raw:
        rw = r["requested_rewrite"]
        q = rw["prompt"].format(rw["subject"])
        s = lm.score(q, [rw["target_true"]["str"], rw["target_new"]["str"]], mode="none")
        true, new = (t.mean_logprob for t in s.scores)
        r["unedited_margin"] = round(true - new, 4)
    n = max(1, round(len(raw) * args.share))
    firm = {id(r) for r in sorted(raw, key=lambda r: -r["unedited_margin"])[:n]}
    out = [r for r in raw if id(r) in firm]
    name = f"counterfact-rome-test-firm{round(args.share * 100)}.json"
    path = ROOT / "src" / "editkit" / "data" / "eval" / name
    path.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    margins = sorted(r["unedited_margin"] for r in out)
    print(f"wrote {path}: {len(out)} of {len(raw)} records, margin {margins[0]:.2f} to "
          f"{margins[-1]:.2f} (all records: median "
          f"{sorted(r['unedited_margin'] for r in raw)[len(raw) // 2]:.2f})")


if __name__ == "__main__":
    main()
