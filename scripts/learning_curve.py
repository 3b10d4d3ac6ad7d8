"""The learning curve of a P-Token training run: validation ES/PS/NS/S against records seen.

    .venv/bin/python scripts/learning_curve.py runs/v2 \
        [--reference src/editkit/data/ptokens/SmolLM2-135M-Instruct/m10]

Reads OUT/checkpoint/trainer_state.json, which `editkit train` writes at every validation
(`eval_every` records and each epoch's end). In the first epoch every record seen is a new one,
so "records seen" there is the number of training records the tokens have learned from (a
one-pass learning curve). `--reference` scores other P-Tokens (e.g. the previously shipped set)
on the same validation records with the same scorer, as a row to compare against.
Prints a markdown table; `--json` writes the rows too.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path, help="the --out directory of an `editkit train` run")
    ap.add_argument("--reference", type=Path, action="append", default=[],
                    help="P-Token directory to score on the run's validation records")
    ap.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = ap.parse_args()
    state = json.loads((args.run / "checkpoint" / "trainer_state.json").read_text())
    cfg = json.loads((args.run / "checkpoint" / "ptokens_config.json").read_text())
    n_train = None
    best = args.run / "ptokens_config.json"
    chosen = None
    if best.is_file():
        info = json.loads(best.read_text())["training"]
        n_train, chosen = info["train_records"], info["best_records_seen"]
    rows = [{"what": f"epoch {h['epoch']}", "records_seen": h["records_seen"],
             "val_kl": h["val_kl"], **h["val_scores"],
             "selected": h["records_seen"] == chosen} for h in state["history"]]
    if args.reference:
        rows += _reference_rows(args.reference, cfg)
    print(f"run {args.run} ({n_train} training records; `*` = the saved tokens)\n")
    print("| | records seen | val KL | ES | PS | NS | S |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        mark = " *" if r.get("selected") else ""
        kl = f"{r['val_kl']:.3f}" if r.get("val_kl") is not None else "–"
        seen = r["records_seen"] if r.get("records_seen") is not None else "–"
        print(f"| {r['what']}{mark} | {seen} | {kl} | {r['ES']:.1f} | {r['PS']:.1f} | "
              f"{r['NS']:.1f} | {r['S']:.1f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


def _reference_rows(paths: list[Path], ptoken_cfg: dict) -> list[dict]:
    """Validation scores of other P-Tokens on the run's validation records."""
    from editkit.loading import load_model
    from editkit.ptokens import PTokens
    from editkit.train import TrainConfig, Trainer

    loaded = load_model(None)
    cfg = TrainConfig.model_validate(ptoken_cfg["training"]["config"])
    trainer = Trainer(loaded.model, loaded.tokenizer, loaded.name, cfg)
    rows = []
    for path in paths:
        pt = PTokens.from_pretrained(path, loaded.model, loaded.tokenizer, name=loaded.name)
        rows.append({"what": f"reference {path}", "records_seen": None, "val_kl": None,
                     **trainer.val_scores(pt)})
    return rows


if __name__ == "__main__":
    main()
