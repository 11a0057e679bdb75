#!/usr/bin/env bash
# Run THERE (the GPU machine of the device tool), from the repository root, with .whl/, .ffmpeg/ and .devmedia/
# carried (bench/device/ffmpeg.sh makes .ffmpeg/, kit.sh the other two). Everything it measures lands in $OUT:
#   gpu.txt       the GPU, the library versions, whether the carried ffmpeg has NVENC/NVDEC
#   e2e-720p.*    `python -m bench --engine wav2lip --device cuda` at 1280x720, video/audio 20 s, faces cached
#   e2e-1080p.*   the same at 1920x1080
#   colour.txt    `python -m bench.colour`: CPU per frame of the colour conversions on this host's cores
#   engines.*     `python -m bench.gpu_engines`: each engine alone on CUDA (faces per second, batch, GPU memory)
#   pytest.txt    the `gpu` tests
# In order of importance (issue 11's end-to-end target first), each under its own timeout: about 8 minutes in all,
# leaving room in the 10-minute call.
set -uo pipefail
source bench/device/env.sh
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  nproc
  "$PYTHON" -c 'import torch, transformers, diffusers; print("torch", torch.__version__, "transformers", transformers.__version__, "diffusers", diffusers.__version__)'
  command -v ffmpeg && ffmpeg -hide_banner -version | head -1
  "$PYTHON" -c 'from heygemd.pipeline.hw_codecs import nvdec_works, nvenc_works; print("nvenc works:", nvenc_works(), "nvdec works:", nvdec_works())'
} 2>&1 | tee "$OUT/gpu.txt"

for h in 720 1080; do
  # The face tracks were detected by kit.sh: every run is a cached-faces run (cached runs 3/3).
  timeout 150 "$PYTHON" -m bench --engine wav2lip --random-checkpoint --device cuda \
    --video ".devmedia/presenter-${h}p.mp4" --audio .devmedia/speech-20s.wav \
    --face-cache .devmedia/cache --repeat 3 --json >"$OUT/e2e-${h}p.json" 2>"$OUT/e2e-${h}p.log"
  echo "e2e ${h}p: exit $?" | tee -a "$OUT/gpu.txt"
done
"$PYTHON" - "$OUT" <<'EOF' 2>&1 | tee "$OUT/e2e.txt"
import json, sys
from pathlib import Path
for h in (720, 1080):
    p = Path(sys.argv[1]) / f"e2e-{h}p.json"
    try:
        r = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        print(f"{h}p: no result ({e})")
        continue
    rd = r["render"]
    print(f"{h}p: {1 / rd['seconds_per_output_second']:.1f}x real time, {rd['frames_per_second']:.0f} frames/s, "
          f"encoder {r['encoder']['video_encoder']}, decoder {r['encoder']['video_decoder']}, "
          f"cached runs {r['cached_runs']}/{r['repeat']}, bottleneck {rd['bottleneck']}, busy {rd['stage_busy_pct']}, "
          f"GPU peak {rd.get('gpu_peak_mib')} MiB, RSS {rd['peak_rss_mib']} MiB, vs plain {r['ratio_to_plain']}x")
EOF

timeout 40 "$PYTHON" -m bench.colour --video .devmedia/presenter-720p.mp4 --video .devmedia/presenter-1080p.mp4 \
  --repeat 2 2>&1 | tee "$OUT/colour.txt"
timeout 120 "$PYTHON" -m bench.gpu_engines --json "$OUT/engines.json" 2>&1 | tee "$OUT/engines.txt"
timeout 150 "$PYTHON" -m pytest -m gpu -p no:cacheprovider -q -rA tests/engines tests/pipeline/test_hw_codecs.py \
  tests/pipeline/test_frames.py 2>&1 | tee "$OUT/pytest.txt"
