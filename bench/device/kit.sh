#!/usr/bin/env bash
# Run HERE (a machine with pip and the package registries), from the repository root: downloads the wheels that
# the GPU machine's image lacks (Python 3.12 and torch 2.11+cu130 are there) into .whl/,
# which git ignores locally. Then call the device tool with carry [".whl"] and the command
# `bash bench/device/check.sh` (budget: under 10 min on an H200, not yet run; see bench/README.md "GPU machine").
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> "$(git rev-parse --git-common-dir)/info/exclude"
rm -rf .whl && mkdir .whl
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d .whl \
  diffusers==0.42.1 transformers==5.24.0 pydantic==2.14.4 pydantic-core==2.50.5 pydantic-settings==2.16.3 \
  python-dotenv==1.2.4 typing-inspection==0.4.5 annotated-types==0.8.0 structlog==26.1.0 librosa==0.11.0 \
  soxr==1.1.0 audioread==3.1.0 pooch==1.9.0 soundfile==0.14.0 decorator==5.3.1 dlib-bin==20.0.1.post1 \
  ffmpeg-python==0.2.0 future==1.0.0
du -sh .whl
