"""The Gemma 3 270M table of docs/models.md, from the reports in results/gemma/.

    .venv/bin/python scripts/gemma_table.py

Each report is one `editkit eval --model gemma3-270m ... --out results/gemma/<name>.json`; the
command of each row is printed above the table. Values: mean ± standard error over records.
"""
from __future__ import annotations

import json
from pathlib import Path

from results_tables import cmd  # scripts/: the one report -> command rule

ROOT = Path("results/gemma")
# report name -> row label, in the table's order
ROWS = [
    ("rome-none", "none (unedited)"),
    ("rome-prompt", "prompt"),
    ("rome-ike-limit100", "IKE"),
    ("rome-ptokens-untrained", "P-Tokens, untrained m10"),
    ("m10-first/rome-ptokens-m10", "P-Tokens, m10 after stage 1 only (neighbour ×4)"),
    ("rome-ptokens-m10", "P-Tokens, trained m10 (shipped: stage 1 + stage 2)"),
    ("rome-ptokens-m10-8bit", "P-Tokens, trained m10, model at 8-bit (bitsandbytes)"),
    ("rome-ptokens-m10-float32set-4bit", "P-Tokens, m10 (trained at float32), model at 4-bit"),
    ("rome-ptokens-m10-4bit", "P-Tokens, m10-4bit (shipped for 4-bit), model at 4-bit"),
    ("rome-prompt-limit30-distractors10", "prompt"),
    ("rome-ike-limit10-distractors10", "IKE"),
    ("rome-ptokens-m10-limit30-distractors10", "P-Tokens, trained m10"),
    ("rome-prompt-limit50-memory1000", "prompt"),
    ("rome-ptokens-m10-limit50-memory1000", "P-Tokens, trained m10"),
]


def command(report: dict) -> str:
    line = cmd(report, model="gemma3-270m",
               untrained_note="run before trained tokens shipped for Gemma (untrained, text init)")
    if "float32set" in report["_name"]:
        line += "  # the float32 set, before m10-4bit shipped"
    if "m10-first" in report["_name"]:
        line += "  # stage 1's tokens, shipped before stage 2 replaced them"
    return line


def main() -> None:
    cmds, lines = [], []
    for name, label in ROWS:
        path = ROOT / f"{name}.json"
        if not path.is_file():
            continue
        r = {**json.loads(path.read_text()), "_name": name}
        c, m, t = r["config"], r["metrics"], r["timing"]
        cmds.append(command(r))
        cells = [f"{m[k]['value']:.1f} ± {m[k]['stderr']:.1f}" for k in ("ES", "PS", "NS", "S")]
        lines.append(f"| {label} | {c.get('distractors') or 0} | {c.get('memory_size') or '–'} | "
                     f"{int(t['records'])} | " + " | ".join(cells) +
                     f" | {t['prompt_tokens_per_question']:.0f} | {t['ms_per_question']:.0f} |")
    print("```bash\n" + "\n".join(cmds) + "\n```\n")
    print("| mode | distractors | memory | n | ES | PS | NS | S | prompt tokens/q | ms/q |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
