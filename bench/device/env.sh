# Sourced by check.sh and latentsync.sh on the GPU machine, from the repository root: heygemd's dependencies from
# the carried wheels (.whl/, kit.sh) over the image's torch, the carried ffmpeg (.ffmpeg/, ffmpeg.sh) first on PATH,
# no hub calls, and $OUT for the results.
# REHEARSAL=1 (here, on the CPU): the current venv's python and the system's ffmpeg instead, nothing installed.
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
OUT=${OUT:-/tmp/heygemd-device-out}
mkdir -p "$OUT"
if [ -n "${REHEARSAL:-}" ]; then
  PYTHON=${PYTHON:-.venv/bin/python}
else
  PYTHON=python3
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  # .devmedia/site: the empty stand-in for dlib's landmark model (kit.sh)
  export PYTHONPATH=/tmp/site:$PWD:$PWD/.devmedia/site PATH=$PWD/.ffmpeg/bin:$PATH
fi
