"""Train the relevance gate for the default embedder and write the artifact shipped in the package.

    .venv/bin/python scripts/train_gate.py [--out src/editkit/data/gate/all-MiniLM-L6-v2/gate.json]

Train splits (CounterFact, and zsRE for question-form wording): pairs and document frequencies;
CounterFact validation and a hold-out of zsRE train (zsRE ships no validation split): the decision
threshold. The test splits are never read. Prints the validation routing (own edit / other edit /
nothing per question kind) that the artifact records in its provenance.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from editkit.data_files import data_file
from editkit.embedder import DEFAULT_EMBEDDER
from editkit.train.gate import GateTrainConfig, train_gate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", default=f"src/editkit/data/gate/{DEFAULT_EMBEDDER}/gate.json")
    ap.add_argument("--n-train", type=int, default=1500)
    ap.add_argument("--train-memory", type=int, default=3000)
    ap.add_argument("--no-zsre", action="store_true", help="CounterFact pairs only")
    args = ap.parse_args()
    cfg = GateTrainConfig(train=str(data_file("counterfact", "counterfact-train.json")),
                          val=str(data_file("counterfact", "counterfact-val.json")),
                          zsre=None if args.no_zsre else str(data_file("zsre", "zsre-train.json")),
                          n_train=args.n_train, train_memory=args.train_memory)
    gate = train_gate(cfg)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    gate.save(args.out)
    prov = {k: v for k, v in gate.artifact.provenance.items() if k != "trained_with"}
    print(json.dumps({"threshold": gate.threshold, **prov}, indent=1))


if __name__ == "__main__":
    main()
