"""Assemble the markdown tables of docs/results.md from results/*.json (written by run_results.py).

    .venv/bin/python scripts/results_tables.py

Values are mean ± standard error over records (docs/metrics.md). Tables whose metrics changed
definition (zsRE localities, MQuAKE matching) only take reports that record their settings (written
after that change); older reports of those rows are left out rather than mixed in.
"""
from __future__ import annotations

import json
from pathlib import Path

from editkit.eval import TASKS
from editkit.metrics import rome_scores

ROOT = Path("results")
PACKAGED = Path("src/editkit/data/eval")  # the data sets that ship in the package (repo paths)


def load(name: str) -> dict | None:
    p = ROOT / f"{name}.json"
    return json.loads(p.read_text()) if p.is_file() else None


def first(name: str, n: int) -> dict | None:
    """A ROME report restricted to its first n records: the metrics recomputed from the stored
    per-record values (the aggregation is a pure function of them), so rows of runs with
    different limits can be compared on the same records."""
    r = load(name)
    if r is None or len(r["records"]) < n:
        return None
    rows = r["records"][:n]
    metrics = {k: v.model_dump() for k, v in rome_scores(rows).items()}
    per_q = r["timing"]["prompt_tokens_per_question"]
    return {**r, "metrics": metrics, "subset": n,
            "timing": {**r["timing"], "records": float(n), "prompt_tokens_per_question": per_q}}


def cmd(r: dict, *, model: str | None = None,
        untrained_note: str = "untrained tokens: scripts/run_results.py untrained") -> str:
    """The `editkit eval` command behind report `r` (`model`: the `--model` it was run with)."""
    c = r["config"]
    parts = ["editkit eval" + (f" --model {model}" if model else "") +
             f" {data_options(r)} --mode {c['mode']}"]
    src = r.get("ptokens") or ""
    if c["mode"] == "ptokens" and "editkit/data/ptokens/" in src:
        # "shipped (<dir>)" or "shipped (<dir>; trained on the full-precision model, ...)"
        parts.append("--ptokens src/editkit/data/ptokens/"
                     + src.split("editkit/data/ptokens/")[1].split(")")[0].split(";")[0])
    if (r.get("settings") or {}).get("quantization"):
        parts.append(f"--quantization {r['settings']['quantization']}")
    for key, flag in (("limit", "--limit"), ("distractors", "--distractors"),
                      ("memory_size", "--memory-size")):
        if c.get(key):
            parts.append(f"{flag} {c[key]}")
    if c.get("ike_self_copy"):
        parts.append("--ike-self-copy")
    if c["mode"] == "ptokens" and "untrained" in src:
        parts.append(f" # {untrained_note}")
    if r.get("subset"):
        parts.append(f" # first {r['subset']} records of this run (scripts/results_tables.py)")
    return " ".join(parts)


def data_options(r: dict) -> str:
    """The options that select report `r`'s data: `--task T` when it is the task's default data
    set (shipped in the package), else `--data` with the file (a packaged one by its path in the
    repository) and the task if one was chosen."""
    c = r["config"]
    if c.get("data") is None:  # evaluated the task's default data set
        return f"--task {c['task']}"
    data = Path(c["data"])
    name = f"{data.parent.name}/{data.name}"
    task = c.get("task") or r.get("format")
    if task in TASKS and TASKS[task].default_data == name:
        return f"--task {task}"
    path = PACKAGED / name if (PACKAGED / name).is_file() else data
    return f"--data {path}" + (f" --task {c['task']}" if c.get("task") else "")


def label(r: dict) -> str:
    """The mode, and for P-Tokens whether they were trained (and m)."""
    mode, src = r["config"]["mode"], r.get("ptokens") or ""
    if mode == "ike":
        ike = (r.get("settings") or {}).get("ike")
        if ike is None:
            return "ike (fixed kind order, before the per-record shuffle)"
        return ("ike + self-copy (original IKE)" if ike["self_copy"]
                else "ike (per-record kinds, no self-copy)")
    if mode != "ptokens":
        return mode
    if "untrained" in src:
        return "ptokens (untrained)"
    m = src.rstrip(")/").rsplit("/m", 1)[-1]
    return f"ptokens (trained, m={m})" if m.isdigit() else "ptokens (trained)"


def table(names: list[str | dict | None], metrics: list[str], *, current: bool = False) -> str:
    """Rows for the reports that exist (a name, or a report from `first`); `current`: only
    reports that record their settings."""
    rows = [r for r in (load(n) if isinstance(n, str) else n for n in names)
            if r and (r.get("settings") or not current)]
    if not rows:
        return "_not run yet_\n"
    out = ["```bash"] + [cmd(r) for r in rows] + ["```", ""]
    out.append("Values: mean ± standard error over records.")
    out.append("")
    out.append("| mode | distractors | memory | n | " + " | ".join(metrics)
               + " | prompt tokens/q | ms/q |")
    out.append("|---" * (len(metrics) + 6) + "|")
    for r in rows:
        c, m, t = r["config"], r["metrics"], r["timing"]
        vals = [f"{m[k]['value']:.1f} ± {m[k]['stderr']:.1f}" if k in m else "–" for k in metrics]
        out.append(f"| {label(r)} | {c['distractors']} | {c['memory_size'] or '–'} | "
                   f"{int(t['records'])} | " + " | ".join(vals)
                   + f" | {t['prompt_tokens_per_question']:.0f} | {t['ms_per_question']:.0f} |")
    return "\n".join(out) + "\n"


MODES = ["none", "prompt", "ptokens-untrained", "ptokens", "ike"]
ROME = ["ES", "PS", "NS", "S"]


def main() -> None:
    print("### CounterFact, ROME protocol (counterfact-rome-test: 300 records; IKE first 50)\n")
    print(table([f"counterfact-rome-test-{m}" if m != "ike" else "counterfact-rome-test-ike-limit50"
                 for m in MODES] + ["counterfact-rome-test-ike-limit50-selfcopy"], ROME))
    print("### IKE variants on the same records (counterfact-rome-test, first 20)\n")
    print(table([first("counterfact-rome-test-ike-limit50", 20),
                 "counterfact-rome-test-ike-limit20", "counterfact-rome-test-ike-limit20-selfcopy",
                 first("counterfact-rome-test-prompt", 20),
                 first("counterfact-rome-test-ptokens", 20)], ROME))
    print("### Distractors (counterfact-rome-test: first 30 records with 10, first 10 with 100)\n")
    print(table([f"counterfact-rome-test-{m}-limit{30 if k == 10 else 10}-distractors{k}"
                 for k in (10, 100)
                 for m in ("prompt", "ptokens-untrained", "ptokens", "ike")], ROME))
    print("### Memory setting: 1,000 edits stored, questions of the first 50 records answered "
          "through retrieval\n")
    print(table([f"counterfact-rome-test-{m}-limit50-memory_size1000"
                 for m in ("prompt", "ptokens-untrained", "ptokens")], ROME))
    print("### CounterFact, EasyEdit protocol (counterfact-test: first 100 records; IKE 30)\n")
    print(table([f"counterfact-test-{m}-limit{100 if m != 'ike' else 30}" for m in MODES],
                ["rewrite_acc", "rephrase_acc", "locality"]))
    print("### zsRE (zsre-test: first 10 records)\n")
    print(table([f"zsre-test-{m}-limit10" for m in MODES],
                ["edit_acc", "rephrase_acc", "locality_acc", "locality", "portability_acc"],
                current=True))
    print("### MQuAKE (mquake-hard-test: first 10 cases)\n")
    print(table([f"mquake-hard-test-{m}-limit10" for m in MODES], ["case_acc", "question_acc"],
                current=True))
    print("### Trained P-Tokens against m (counterfact-rome-test, 300 records)\n")
    print(table([f"counterfact-rome-test-ptokens-m{m}" for m in (1, 3, 5, 10)], ROME))


if __name__ == "__main__":
    main()
