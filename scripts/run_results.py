"""Run the evaluation grid behind docs/results.md in one process (the model is loaded once).

    .venv/bin/python scripts/run_results.py [GROUP ...]     # groups: rome, distractors, easyedit,
                                                            #   zsre, mquake, memory, msweep,
                                                            #   ike-selfcopy, untrained
    .venv/bin/python scripts/run_results.py rome --force --modes ike   # rerun only those rows
    .venv/bin/python scripts/run_results.py zsre --limit 10            # fewer records (own names)
(groups first: --modes takes every word after it)

Each run is exactly `editkit eval --task T --mode M --limit N --distractors K --memory-size S
[--ike-self-copy] --out results/<name>.json` (each task on its data set that ships in the package,
or under $EDITKIT_DATA); this script only saves reloading the model between runs. Existing reports
are skipped unless --force.
Then `.venv/bin/python scripts/results_tables.py > docs/results_tables.md` assembles the tables.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from editkit import EditableLM, evaluate
from editkit.eval import TASKS
from editkit.ptokens import PTokens

# The evaluation tasks; each runs on its default data set (`Task.default_data`)
ROME, EASY, ZSRE, MQUAKE = "counterfact-rome", "counterfact", "zsre", "mquake"
MODES = ["none", "prompt", "ptokens", "ike"]

# Limits keep the whole grid within about an hour on 2 shared CPU cores; IKE (~1,000 prompt tokens
# per question) gets fewer records than the cheap modes.
GROUPS: dict[str, list[dict]] = {
    "rome": [dict(task=ROME, mode=m, limit=None if m != "ike" else 50) for m in MODES],
    "distractors": [dict(task=ROME, mode=m, limit=30 if k == 10 else 10, distractors=k)
                    for k in (10, 100) for m in ("prompt", "ptokens", "ike")],
    "easyedit": [dict(task=EASY, mode=m, limit=100 if m != "ike" else 30) for m in MODES],
    "zsre": [dict(task=ZSRE, mode=m, limit=100 if m != "ike" else 30) for m in MODES],
    "mquake": [dict(task=MQUAKE, mode=m, limit=10) for m in MODES],
    "memory": [dict(task=ROME, mode=m, limit=50, memory_size=1000)
               for m in ("prompt", "ptokens")],
    # the shipped trained P-Tokens at each m (the default m is the `ptokens` rows above)
    "msweep": [dict(task=ROME, mode="ptokens", m=m) for m in (1, 3, 5, 10)],
    # original IKE's variant: a copy demonstration of the evaluated fact itself (audit D-2)
    "ike-selfcopy": [dict(task=ROME, mode="ike", limit=50, ike_self_copy=True)],
}
# the same P-Token rows with untrained tokens (text init " new fact", m = 3), for comparison
GROUPS["untrained"] = [dict(c, untrained=True) for g in ("rome", "distractors", "memory",
                                                       "easyedit", "zsre", "mquake")
                       for c in GROUPS[g] if c["mode"] == "ptokens"]


def name_of(cfg: dict) -> str:
    mode = cfg["mode"] + ("-untrained" if cfg.get("untrained") else "")
    data = Path(TASKS[cfg["task"]].default_data)  # reports are named after the data set
    parts = [data.stem, mode + (f"-m{cfg['m']}" if "m" in cfg else "")]
    for key in ("limit", "distractors", "memory_size"):
        if cfg.get(key):
            parts.append(f"{key}{cfg[key]}")
    if cfg.get("ike_self_copy"):
        parts.append("selfcopy")
    return "-".join(parts)


def main(groups: list[str], modes: list[str] | None = None, force: bool = False,
         limit: int | None = None) -> None:
    lms = {None: EditableLM.from_pretrained(device="cpu")}
    out = Path("results")
    out.mkdir(exist_ok=True)
    for g in groups:
        for cfg in GROUPS[g]:
            if modes and cfg["mode"] not in modes:
                continue
            if limit:
                cfg = {**cfg, "limit": limit}
            name = name_of(cfg)
            path = out / f"{name}.json"
            if path.exists() and not force:
                print(f"skip {path} (exists)", flush=True)
                continue
            t = time.time()
            cfg = dict(cfg)
            m = "untrained" if cfg.pop("untrained", False) else cfg.pop("m", None)
            if m == "untrained" and m not in lms:
                base = lms[None]
                lms[m] = EditableLM.from_pretrained(device="cpu", ptokens=PTokens.create(
                    base.model, base.tokenizer, name=base.name, m=3, init="text"))
            elif m not in lms:
                lms[m] = EditableLM.from_pretrained(device="cpu", m=m)
            report = evaluate(lms[m], **cfg)
            report.save(path)
            print(f"## {g}: {name} ({time.time() - t:.0f} s)\n{report.table()}\n",
                  flush=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("groups", nargs="*", metavar="GROUP", help=", ".join(GROUPS))
    ap.add_argument("--modes", nargs="+", help="only these modes of the groups")
    ap.add_argument("--force", action="store_true", help="rerun rows whose report exists")
    ap.add_argument("--limit", type=int, help="override every selected row's record limit")
    args = ap.parse_args()
    if unknown := [g for g in args.groups if g not in GROUPS]:
        ap.error(f"unknown group(s) {unknown}; choose from {', '.join(GROUPS)}")
    main(args.groups or list(GROUPS), args.modes, args.force, args.limit)
