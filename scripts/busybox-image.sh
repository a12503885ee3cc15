#!/usr/bin/env bash
# Builds a `busybox` image archive from Debian's busybox-static, with no
# download and no Docker: one layer with /bin/busybox and a symlink per
# applet, /etc/passwd and /etc/group (root, nobody), /tmp, an /etc/hosts
# placeholder and /var/www; config Cmd ["sh"] and the usual PATH. The
# archive is in `docker save` format (manifest.json, <config>.json,
# <layer>/layer.tar, sha256 digests), so `shoal image load` and
# `docker load` both take it. Same busybox binary in, same bytes out
# (sorted entries, fixed owners and mtimes).
#
# usage: scripts/busybox-image.sh OUT.tar [TAG]   (TAG: busybox:latest)
set -euo pipefail

out=${1:?usage: $0 OUT.tar [TAG]}
tag=${2:-busybox:latest}
busybox=${BUSYBOX:-/bin/busybox}
if [ ! -x "$busybox" ]; then
  echo "$0: $busybox not found: install Debian's busybox-static" >&2
  exit 1
fi
if ! "$busybox" --list >/dev/null 2>&1; then
  echo "$0: $busybox has no --list: want a static busybox (busybox-static)" >&2
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
mkdir -p "$root"/{bin,etc,root,tmp,var/www,home,dev,proc,sys}
chmod 1777 "$root/tmp"
chmod 700 "$root/root"
cp "$busybox" "$root/bin/busybox"
chmod 755 "$root/bin/busybox"
for applet in $("$busybox" --list); do
  [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
done
cat >"$root/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/home:/bin/false
PASSWD
cat >"$root/etc/group" <<'GROUP'
root:x:0:
nobody:x:65534:
GROUP
# Replaced by a bind mount in pods; here for `docker run` and plain runc.
printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"

deterministic=(--sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=gnu)
layer=$work/layer.tar
(cd "$root" && tar "${deterministic[@]}" -cf "$layer" -- *)
diff_id=$(sha256sum "$layer" | cut -d' ' -f1)

case "$(uname -m)" in
  x86_64) arch=amd64 ;;
  aarch64) arch=arm64 ;;
  armv7l|armv6l) arch=arm ;;
  *) arch=$(uname -m) ;;
esac
path_env=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
version=$("$busybox" 2>/dev/null | head -n1 | tr -d '"\\' || true)
config=$(printf '{"architecture":"%s","os":"linux","created":"1970-01-01T00:00:00Z","config":{"Env":["%s"],"Cmd":["sh"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created":"1970-01-01T00:00:00Z","created_by":"scripts/busybox-image.sh: %s"}]}' \
  "$arch" "$path_env" "$diff_id" "$version")
config_id=$(printf '%s' "$config" | sha256sum | cut -d' ' -f1)

repo=${tag%:*}
tag_only=${tag##*:}
if [ "$repo" = "$tag" ]; then tag_only=latest; fi
archive=$work/archive
mkdir -p "$archive/$diff_id"
mv "$layer" "$archive/$diff_id/layer.tar"
printf '1.0' >"$archive/$diff_id/VERSION"
printf '{"id":"%s","created":"1970-01-01T00:00:00Z","os":"linux"}' "$diff_id" >"$archive/$diff_id/json"
printf '%s' "$config" >"$archive/$config_id.json"
printf '[{"Config":"%s.json","RepoTags":["%s:%s"],"Layers":["%s/layer.tar"]}]' \
  "$config_id" "$repo" "$tag_only" "$diff_id" >"$archive/manifest.json"
printf '{"%s":{"%s":"%s"}}' "$repo" "$tag_only" "$diff_id" >"$archive/repositories"

mkdir -p "$(dirname "$out")"
(cd "$archive" && tar "${deterministic[@]}" -cf "$work/out.tar" -- *)
mv "$work/out.tar" "$out"
echo "$out: $repo:$tag_only (image id sha256:$config_id)"
