#!/usr/bin/env bash
# Run THERE (the GPU machine of the device tool), from the repository root, with .whl/, .ffmpeg/ and .devmedia/
# carried (as for check.sh): LatentSync 1.6 on CUDA, before check.sh when the LatentSync figures are the ones
# wanted. Everything lands in $OUT, in order of importance, each step under its own timeout (about 6 minutes):
#   ls-pytest.txt      the LatentSync `gpu` tests: fp16 within tolerance of fp32, the windows per batch fitted to
#                      the GPU at load, GPU memory released on close
#   ls-720p.json/.log  `python -m bench --engine latentsync` end to end: the 720p presenter, 4 s of speech, full-size
#                      random weights (built once, ~5.5 GB), 20 steps, faces cached: frames per second, seconds per
#                      output second, GPU peak, the stages' shares
#   ls-deepcache.json  one 16-frame window at 20 steps with and without DeepCache: seconds and the frames' difference
#   ls.txt             the summary of the two
# Rehearsal here, on the CPU, after kit.sh (.devmedia/): REHEARSAL=1 LS_DEVICE=cpu LS_WEIGHTS=tiny LS_STEPS=2
# bash bench/device/latentsync.sh
set -uo pipefail
source bench/device/env.sh
device=${LS_DEVICE:-cuda} weights=${LS_WEIGHTS:-full} steps=${LS_STEPS:-20}
models=/tmp/heygemd-ls-models

timeout 150 "$PYTHON" -m pytest -m gpu -p no:cacheprovider -q -rA tests/engines/test_latentsync.py \
  2>&1 | tee "$OUT/ls-pytest.txt"

rm -rf "$models" && timeout 120 "$PYTHON" -m bench.child latentsync-weights --out "$models/latentsync" --size "$weights" \
  || exit 1
ffmpeg -v error -y -i .devmedia/speech-20s.wav -t 4 "$OUT/speech-4s.wav" || exit 1
timeout 240 "$PYTHON" -m bench --engine latentsync --models "$models" --device "$device" --latentsync-steps "$steps" \
  --video .devmedia/presenter-720p.mp4 --audio "$OUT/speech-4s.wav" --face-cache .devmedia/cache --json \
  >"$OUT/ls-720p.json" 2>"$OUT/ls-720p.log"
echo "e2e 720p: exit $?" | tee "$OUT/ls.txt"
timeout 120 "$PYTHON" -m bench --engine latentsync --models "$models" --device "$device" --latentsync-steps "$steps" \
  --latentsync-deepcache --json >"$OUT/ls-deepcache.json" 2>"$OUT/ls-deepcache.log"
echo "deepcache: exit $?" | tee -a "$OUT/ls.txt"
rm -f "$OUT/speech-4s.wav"

"$PYTHON" - "$OUT" <<'PY' 2>&1 | tee -a "$OUT/ls.txt"
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
for name in ("ls-720p.json", "ls-deepcache.json"):
    try:
        r = json.loads((out / name).read_text())
    except (OSError, json.JSONDecodeError) as e:
        print(f"{name}: no result ({e})")
        continue
    if "render" in r:
        rd = r["render"]
        print(f"720p: {rd['frames_per_second']:.2f} frames/s, {rd['seconds_per_output_second']:.1f} s per output s, "
              f"bottleneck {rd['bottleneck']}, busy {rd['stage_busy_pct']}, GPU peak {rd.get('gpu_peak_mib')} MiB, "
              f"RSS {rd['peak_rss_mib']} MiB")
    else:
        print("deepcache:", json.dumps(r))
PY
