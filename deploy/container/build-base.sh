#!/usr/bin/env bash
# Make the base image locally, for hosts that reach a Debian mirror but no container registry:
# a Debian bookworm minbase made by mmdebstrap (as slim as the registry's debian:bookworm-slim: no manuals,
# documentation or translations), imported into the local image store.
#
#   bash deploy/container/build-base.sh [TAG]     default TAG: localhost/heygemd-base:bookworm
#   podman build --build-arg BASE=localhost/heygemd-base:bookworm ...   (see INSTALL.md, "In a container")
#
# Needs root (or sudo) for mmdebstrap, and podman to import. Environment:
#   MIRROR            Debian mirror (default http://deb.debian.org/debian)
#   SECURITY_MIRROR   its security suite (default http://deb.debian.org/debian-security)
#   BASE_TAR      keep the root file system as this tar file too (default: a temporary file, removed)
#   PODMAN        podman with its options, e.g. "podman --root /var/tmp/store" (default: podman)
set -euo pipefail

tag=${1:-localhost/heygemd-base:bookworm}
mirror=${MIRROR:-http://deb.debian.org/debian}
security=${SECURITY_MIRROR:-http://deb.debian.org/debian-security}
read -r -a podman <<<"${PODMAN:-podman}"

tar=${BASE_TAR:-}
if [[ -z "$tar" ]]; then
    tar=$(mktemp --tmpdir heygemd-base.XXXXXX.tar)
    trap 'rm -f "$tar"' EXIT
fi

# The dpkg path excludes stay in the image (/etc/dpkg/dpkg.cfg.d/), so packages installed on top are slim too.
mmdebstrap --variant=minbase --format=tar --quiet \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --aptopt='Acquire::Languages "none"' \
    --aptopt='APT::Install-Recommends "false"' \
    bookworm "$tar" \
    "deb $mirror bookworm main" \
    "deb $mirror bookworm-updates main" \
    "deb $security bookworm-security main"

"${podman[@]}" import --change 'CMD ["/bin/bash"]' "$tar" "$tag" >/dev/null
echo "$tag"
