#!/usr/bin/env bash
# One short check for a machine with a CUDA GPU (an H200 in the project's device sessions), ~8 minutes:
#   1. what the machine has (GPU, torch, CUDA);
#   2. silodiff installed into the machine's Python if it is not importable yet (needs the dependencies or a
#      package index; torch itself is never installed or changed here);
#   3. the device-parametrised tests, whose CUDA cases run only here (CPU cases too: they are seconds);
#   4. bench/scale.py, which adds its GPU section only when CUDA is present (results under bench/results/,
#      copied to $OUT when that is set, so a device session gets them back).
# Usage: bash bench/gpu_check.sh        (from the repository root)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-}
log() { printf '\n== %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }

log "machine"
nvidia-smi -L || echo "nvidia-smi: not found"
$PY - <<'PY'
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(),
      "devices", [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])
PY

log "install (only what is missing)"
if ! PYTHONPATH=$PWD/src $PY -c "import silodiff, diffusers, typer, safetensors, sklearn, pytest" 2>/dev/null; then
    timeout 240 $PY -m pip install -q --disable-pip-version-check -e '.[test,ray]' || \
        echo "pip install failed: the tests below report what is missing"
fi
export PYTHONPATH=$PWD/src

log "GPU tests (device-parametrised; CUDA cases run here)"
timeout 240 $PY -m pytest -q -p no:cacheprovider tests/training/test_devices_precision.py tests/nn/test_unet_presets.py \
    tests/sampling tests/compose 2>&1 | tail -15 || echo "tests failed (see above)"

log "benchmark (CPU section + GPU section)"
[ -d /usr/share/datasets/fashion-mnist ] || (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || true)
timeout 420 $PY bench/scale.py || echo "bench/scale.py failed or timed out"
if [ -n "$OUT" ]; then cp bench/results/scale.json bench/results/scale.md "$OUT"/ 2>/dev/null || true; fi
log "done"
