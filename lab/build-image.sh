#!/usr/bin/env bash
# Builds the lab's image, shoal-lab:latest, without a registry: a root
# filesystem assembled from files on this machine (shoal and its shim,
# runc, nft for the service proxy's table, busybox for a shell and the
# pods' image, the libraries they link, and the nginx and postgres images
# made from Debian packages by `shoal image build`)
# and imported with `docker import`. Rebuilt only when an input changed
# (their SHA-256 is the image's `shoal.inputs` label).
#
#   lab/build-image.sh [SHOAL_BINARY]
#
# SHOAL_BINARY defaults to the release build, else the debug build, under
# ${CARGO_TARGET_DIR:-target}. Debug info is stripped from the copy.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
IMAGE=${SHOAL_LAB_IMAGE:-shoal-lab:latest}

log() { printf '[lab/build-image] %s\n' "$*" >&2; }

SHOAL_BIN=${1:-}
if [[ -z $SHOAL_BIN ]]; then
    for candidate in "$TARGET/release/shoal" "$TARGET/debug/shoal"; do
        if [[ -x $candidate ]]; then SHOAL_BIN=$candidate; break; fi
    done
fi
[[ -n $SHOAL_BIN && -x $SHOAL_BIN ]] || { log "error: no shoal binary; cargo build --release -p shoal, or give its path"; exit 1; }
SHIM_BIN=$(dirname "$SHOAL_BIN")/shoal-container-shim
RUNC=$(command -v runc) || { log "error: runc not found (apt-get install runc)"; exit 1; }
BUSYBOX=/bin/busybox
[[ -x $BUSYBOX ]] || { log "error: $BUSYBOX not found (apt-get install busybox-static)"; exit 1; }
command -v docker >/dev/null || { log "error: docker not found"; exit 1; }
NFT=$(command -v nft) || { log "error: nft not found (apt-get install nftables)"; exit 1; }

inputs=("$SHOAL_BIN" "$RUNC" "$NFT" "$BUSYBOX" "$ROOT/lab/entrypoint.sh" "${BASH_SOURCE[0]}")
[[ -f /etc/ssl/certs/ca-certificates.crt ]] && inputs+=(/etc/ssl/certs/ca-certificates.crt)
[[ -x $SHIM_BIN ]] && inputs+=("$SHIM_BIN")
hash=$(sha256sum "${inputs[@]}" | sha256sum | cut -c1-32)
if [[ $(docker image inspect "$IMAGE" --format '{{index .Config.Labels "shoal.inputs"}}' 2>/dev/null || true) == "$hash" ]]; then
    log "$IMAGE is up to date ($hash)"
    exit 0
fi

ROOTFS=$(mktemp -d -t shoal-lab-rootfs.XXXXXX)
trap 'rm -rf "$ROOTFS"' EXIT
mkdir -p "$ROOTFS"/{bin,sbin,usr/bin,usr/sbin,lib,lib64,etc,tmp,run,root,proc,sys,dev,var/lib/shoal}

# A binary and the libraries it links, at the same paths as here.
install_binary() {
    local src=$1 dst=$2 lib
    cp "$src" "$ROOTFS$dst"
    while read -r lib; do
        [[ -n $lib && -e $lib ]] || continue
        mkdir -p "$ROOTFS$(dirname "$lib")"
        cp -L "$lib" "$ROOTFS$lib"
    done < <(ldd "$src" 2>/dev/null | grep -o '/[^ ]*' || true)
}

log "assembling the root filesystem from $SHOAL_BIN"
objcopy --strip-debug "$SHOAL_BIN" "$ROOTFS/tmp/shoal"
install_binary "$ROOTFS/tmp/shoal" /usr/bin/shoal
rm "$ROOTFS/tmp/shoal"
if [[ -x $SHIM_BIN ]]; then
    objcopy --strip-debug "$SHIM_BIN" "$ROOTFS/tmp/shim"
    install_binary "$ROOTFS/tmp/shim" /usr/bin/shoal-container-shim
    rm "$ROOTFS/tmp/shim"
fi
install_binary "$RUNC" /usr/sbin/runc
install_binary "$NFT" /usr/sbin/nft
# nft names protocols and services through these.
for table in /etc/protocols /etc/services; do
    [[ -f $table ]] && cp "$table" "$ROOTFS$table"
done
cp "$BUSYBOX" "$ROOTFS/bin/busybox"
for applet in $("$BUSYBOX" --list); do
    [[ -e $ROOTFS/bin/$applet ]] || ln -s busybox "$ROOTFS/bin/$applet"
done
install -m 0755 "$ROOT/lab/entrypoint.sh" "$ROOTFS/usr/bin/lab-entrypoint"
# The system's CA bundle: shoal's clients load native roots besides the
# cluster's CA.
if [[ -f /etc/ssl/certs/ca-certificates.crt ]]; then
    mkdir -p "$ROOTFS/etc/ssl/certs"
    cp /etc/ssl/certs/ca-certificates.crt "$ROOTFS/etc/ssl/certs/"
fi
# The guide's images, made from this machine's Debian packages (the node
# containers have no apt): the agents load them when a pod first names one
# (--image-archives). Packages are fetched once per machine (cached).
mkdir -p "$ROOTFS/usr/share/shoal/images"
for image in nginx:1.25 postgres:15; do
    if ! "$SHOAL_BIN" image build "$image" --no-load -o "$ROOTFS/usr/share/shoal/images/${image%%:*}.tar" >&2; then
        log "warning: $image not built (no apt sources?); lab pods naming it will wait in ImagePullBackOff"
    fi
done
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$ROOTFS/etc/passwd"
printf 'root:x:0:\n' >"$ROOTFS/etc/group"

log "importing $IMAGE"
tar -C "$ROOTFS" -c . | docker import \
    --change 'ENTRYPOINT ["/usr/bin/lab-entrypoint"]' \
    --change 'ENV PATH=/usr/bin:/usr/sbin:/bin:/sbin' \
    --change "LABEL shoal.inputs=$hash" \
    - "$IMAGE" >/dev/null
log "built $IMAGE ($hash)"
