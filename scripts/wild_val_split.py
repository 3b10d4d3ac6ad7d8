"""Write the zsRE validation records of a training config as a zsRE file for `editkit eval --task
wild --data ...`: the records `editkit train` holds out for validation (drawn first, never
trained on), in their published format, so P-Token candidates are compared on what users read
without touching the test split.

    .venv/bin/python scripts/wild_val_split.py configs/ptokens-smollm2-chat.json runs/wild-val
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from editkit.ike import default_train_file
from editkit.train import TrainConfig, load_training_records


def main(config: str, out: str) -> None:
    data = default_train_file().parent
    cfg = TrainConfig.model_validate({**json.loads(Path(config).read_text()), "init_from": None,
                                      "data": [data / "counterfact-train.json",
                                               data / "zsre-train.json"]})
    val = load_training_records(cfg)[: cfg.n_val]
    raw = json.loads((data / "zsre-train.json").read_text())
    keys = {(r.subject, r.prompt, r.target_new) for r in val}
    picked = [r for r in raw if (r["subject"], r["src"], r["alt"]) in keys]
    dest = Path(out)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "zsre-val.json").write_text(json.dumps(picked, indent=1))
    print(f"{len(picked)} zsRE validation records of {len(val)} -> {dest / 'zsre-val.json'}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
