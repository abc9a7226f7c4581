#!/usr/bin/env bash
# GPU smoke test, for a machine with one NVIDIA GPU and no network (issue 12): in under 8 minutes,
#   1. bench/gpu_smoke.py: the whole DAG with `device: cuda` on a tiny hub-style preset of every
#      architecture family plus the embedded preset -> bench/results/gpu_smoke_cuda.json
#   2. bench/influence.py --device cuda --shape pythia-70m: batched influence vs the per-latent
#      reference at Pythia-70M's shape -> bench/results/influence_cuda_pythia-70m.json
# and prints what it measured. Python packages the machine lacks come from wheels in .whl/ (made here
# by bench/gpu_wheels.sh, for the machine's Python), installed offline into a private folder; the project
# itself is used from src/. SMOKE_DEVICE=cpu runs the same on a CPU (slow; for checking the script), with
# SMOKE_WHEELS=none PYTHON=.venv/bin/python SMOKE_FAMILIES=gpt2 SMOKE_THREADS=2 to keep it short.
#
#     bash bench/gpu_smoke.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEVICE=${SMOKE_DEVICE:-cuda}
start=$(date +%s)
WHEELS=${SMOKE_WHEELS:-.whl}
if [ -d "$WHEELS" ] && compgen -G "$WHEELS/*.whl" >/dev/null; then
    site=${SMOKE_SITE:-/tmp/saeflow-site}
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$WHEELS"/*.whl
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 WANDB_MODE=disabled SPARSIFY_DISABLE_TRITON=1
"$PY" -c "import torch, transformer_lens, sae_lens, sparsify, snakemake; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
[ "$DEVICE" = cpu ] || nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

"$PY" bench/gpu_smoke.py --device "$DEVICE" ${SMOKE_FAMILIES:+--families "$SMOKE_FAMILIES"}
echo "[gpu_smoke] DAG done at $(( $(date +%s) - start )) s"
"$PY" bench/influence.py --device "$DEVICE" --shape pythia-70m --windows 3 --ref-windows 2 ${SMOKE_THREADS:+--threads "$SMOKE_THREADS"}
echo "[gpu_smoke] influence done at $(( $(date +%s) - start )) s"
