#!/bin/bash
# updates task: first 30 ROME CounterFact test records + 20 app facts (test split), default model
cd /work/main
for mode in ptokens prompt; do
  .venv/bin/editkit eval --task updates --limit 30 --app-facts 20 --mode $mode \
    --out results/updates-2026-12-05/updates-$mode.json > results/updates-2026-12-05/updates-$mode.log 2>&1
done
