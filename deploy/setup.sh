#!/usr/bin/env bash
# Set up heygemd in this checkout: system packages, a virtual environment with PyTorch, heygemd itself.
#   bash deploy/setup.sh          set up only
#   bash deploy/setup.sh --demo   set up, put a generated demo job in inbox/ and process it (result in outbox/)
# PyTorch: TORCH_SPEC (default torch==2.13.0) and TORCH_INDEX_URL choose the build: the CPU wheel where pip is
# set up with it, else TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu; .../whl/cu128 on a CUDA server.
# It is installed first and named again with heygemd, so no dependency pulls in another build.
set -euo pipefail
cd "$(dirname "$0")/.."

demo=0
[[ "${1:-}" == "--demo" ]] && demo=1

apt_packages=(ffmpeg espeak-ng libsystemd-dev pkg-config python3-venv python3-dev gcc systemd python3-seccomp)
apt_packages+=(redis-server)  # the farm's broker; the tests start their own on a free localhost port
apt_packages+=(prometheus)  # the metrics test scrapes /metrics with it (its own binary, temp config; the service unused)
# The container image's test: mmdebstrap makes the base from the Debian mirror, buildah builds, podman runs (with runc).
apt_packages+=(buildah podman mmdebstrap runc)
missing=()
# chromium + chromium-driver: the web dashboard's browser test drives Debian's headless chromium (never downloaded).
for pkg in "${apt_packages[@]}" chromium chromium-driver; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "==> apt-get install ${missing[*]}"
    sudo_cmd=()
    [[ $(id -u) -ne 0 ]] && sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi

python=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
    echo "==> creating .venv"
    "$python" -m venv .venv
fi
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
torch_spec=${TORCH_SPEC:-torch==2.13.0}
index=()
[[ -n "${TORCH_INDEX_URL:-}" ]] && index=(--index-url "$TORCH_INDEX_URL")
echo "==> installing $torch_spec"
"${pip[@]}" "${index[@]}" "$torch_spec"
echo "==> installing heygemd and its dependencies"
# Naming torch again with the same spec keeps pip from resolving a different (CUDA) build for dependents.
"${pip[@]}" -e ".[journald,test,demo]" "$torch_spec"

if ((demo)); then
    .venv/bin/heygemd demo --name demo-lesson
    .venv/bin/heygemd once
    .venv/bin/heygemd status
    echo "==> results:"
    ls -l outbox/demo-lesson*/
    echo "The demo's lip-synced videos are in $(pwd)/outbox/demo-lesson/ (presenter-1.mp4, presenter-2.mp4)."
fi

cat <<NEXT

==> heygemd is set up in $(pwd)/.venv. Next steps:
  source .venv/bin/activate            # puts heygemd on PATH (or call .venv/bin/heygemd)
  heygemd check                        # what is installed: ffmpeg, engines and their model files, folders
  HEYGEMD_WEB__ENABLED=true heygemd run  # watch inbox/ and render; dashboard and API on http://127.0.0.1:7860
  heygemd status                       # the jobs and their videos (outbox/<job>/status.json)
  .venv/bin/python -m pytest           # the tests (about 10-25 minutes on 2 cores)
Drop a folder with one audio and one or more presenter videos into inbox/; results appear in outbox/<job>/.
NEXT
