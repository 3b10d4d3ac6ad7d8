#!/bin/bash
# Train the P-Tokens that ship for the default model and copy the artifacts into the package.
#   bash scripts/train_shipped.sh [M ...]        (default: 3 1 10 5; about 15 min per m on 2 cores)
# Each run: `editkit train --config configs/ptokens-smollm2.json --m M --epochs 3 --out runs/mM`,
# then the two artifact files (no checkpoint) go to src/editkit/data/ptokens/SmolLM2-135M-Instruct/mM.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${EDITKIT_BIN:-.venv/bin}
for m in "${@:-3 1 10 5}"; do
  for one in $m; do
    "$BIN/editkit" train --config configs/ptokens-smollm2.json --m "$one" --epochs 3 \
      --out "runs/m$one"
    dest="src/editkit/data/ptokens/SmolLM2-135M-Instruct/m$one"
    mkdir -p "$dest"
    cp "runs/m$one/ptokens_config.json" "runs/m$one/ptokens.safetensors" "$dest/"
  done
done
