#!/usr/bin/env bash
# Run HERE (a machine with pip and the package registries), from the repository root, after
# bench/device/ffmpeg.sh (.ffmpeg/). It makes what the GPU machine's image lacks (Python 3.12 and torch 2.11+cu130
# are there), in folders git ignores locally:
#   .whl/      the wheels of heygemd's other dependencies
#   .devmedia/ 20 s of espeak-ng speech, 20 s 720p and 1080p presenters, and their face tracks (detected here,
#              on the CPU: the 100 MB dlib landmark model is not carried), plus an empty stand-in for that model
#              so the engine's start-up check passes; should a detection run there, dlib fails loudly.
# Then call the device tool with carry [".whl", ".ffmpeg", ".devmedia"] and the command
# `bash bench/device/check.sh` (about 7 min on an H200, not yet run; see bench/README.md "GPU machine").
set -euo pipefail
cd "$(dirname "$0")/../.."
exclude="$(git rev-parse --git-common-dir)/info/exclude"
for d in /.whl/ /.devmedia/; do grep -qx "$d" "$exclude" 2>/dev/null || echo "$d" >> "$exclude"; done
rm -rf .whl && mkdir .whl
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d .whl \
  diffusers==0.42.1 transformers==5.24.0 pydantic==2.14.4 pydantic-core==2.50.5 pydantic-settings==2.16.3 \
  python-dotenv==1.2.4 typing-inspection==0.4.5 annotated-types==0.8.0 structlog==26.1.0 librosa==0.11.0 \
  soxr==1.1.0 audioread==3.1.0 pooch==1.9.0 soundfile==0.14.0 decorator==5.3.1 dlib-bin==20.0.1.post1
du -sh .whl

# Media, made with heygemd's own demo code, and their face tracks in the cache layout (detector dlib-hog).
python=${PYTHON:-.venv/bin/python}
rm -rf .devmedia && mkdir -p .devmedia/site/face_recognition_models/models
: > .devmedia/site/face_recognition_models/__init__.py  # a regular package: it shadows an installed one
: > .devmedia/site/face_recognition_models/models/shape_predictor_68_face_landmarks.dat
"$python" -c '
from pathlib import Path
import tempfile
from bench import inputs
work = Path(".devmedia")
inputs.speech(work / "speech-20s.wav", 20.0, Path(tempfile.mkdtemp()))
for w, h in ((1280, 720), (1920, 1080)):
    inputs.presenter(work / f"presenter-{h}p.mp4", 20.0, (w, h), 25.0)
'
for h in 720 1080; do
  "$python" -m bench --engine mouthwarp --video ".devmedia/presenter-${h}p.mp4" --audio .devmedia/speech-20s.wav \
    --face-cache .devmedia/cache >/dev/null
done
ls -la .devmedia .devmedia/cache/faces
du -shc .whl .devmedia .ffmpeg 2>/dev/null
