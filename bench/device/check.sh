#!/usr/bin/env bash
# Run THERE (the GPU machine of the device tool), from the repository root, with .whl/ carried (kit.sh).
# Everything it measures lands in $OUT: gpu.txt, pytest.txt, engines.json / engines.txt.
set -uo pipefail
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
OUT=${OUT:-/tmp/heygemd-device-out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c 'import torch, transformers, diffusers; print("torch", torch.__version__, "transformers", transformers.__version__, "diffusers", diffusers.__version__)'
  command -v ffmpeg && ffmpeg -hide_banner -encoders 2>/dev/null | grep -i nvenc || echo "no ffmpeg with NVENC on this machine"
} 2>&1 | tee "$OUT/gpu.txt"
timeout 300 python3 -m pytest -m gpu -p no:cacheprovider -q -rA tests/engines 2>&1 | tee "$OUT/pytest.txt"
timeout 240 python3 -m bench.gpu_engines --json "$OUT/engines.json" 2>&1 | tee "$OUT/engines.txt"
