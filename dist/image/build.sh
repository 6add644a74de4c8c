#!/usr/bin/env bash
# Builds the flanneld container image without a container engine or a registry:
#   1. flanneld, statically (CGO_ENABLED=0), at /opt/bin/flanneld (the DaemonSet's command);
#   2. a minimal root filesystem from this machine's Debian packages (apt-get download,
#      dpkg-deb -x): iptables (legacy and nft), nftables, dash, netbase and the libraries
#      they depend on, without documentation;
#   3. an image FROM scratch committed with buildah (vfs storage), plus an OCI archive of it
#      that `podman load`, `ctr images import` or `skopeo copy` can read elsewhere.
#
# Environment (all optional):
#   IMAGE          image name           (default localhost/flannel-go/flanneld:latest)
#   VERSION        flanneld --version   (default: git describe)
#   OUT            OCI archive to write (default dist/image/out/flanneld.oci.tar; "" = none)
#   STORAGE_ROOT   buildah storage root (default: buildah's, /var/lib/containers/storage)
#   DEB_CACHE      where the .deb files are kept between builds (default ~/.cache/flannel-go/debs)
#   GO             the go command
# Needs root (dpkg-deb ownership, buildah), apt-get, dpkg-deb, ldconfig and buildah.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
IMAGE="${IMAGE:-localhost/flannel-go/flanneld:latest}"
VERSION="${VERSION:-$(git -C "$repo" describe --tags --always --dirty 2>/dev/null || echo v0.0.0-dev)}"
OUT="${OUT-$here/out/flanneld.oci.tar}"
DEB_CACHE="${DEB_CACHE:-${FLANNEL_GO_CACHE:-$HOME/.cache/flannel-go}/debs}"
GO="${GO:-$(command -v go 2>/dev/null || echo /usr/local/go/bin/go)}"

# The packages whose files the image holds; their dependencies are added below.
roots=(iptables nftables dash netbase)
# Dependencies never followed: only needed to install or remove packages with dpkg, which
# the image never does (dash depends on them for its maintainer scripts).
skip=" dpkg debianutils "

log() { printf 'image: %s\n' "$*" >&2; }
for c in apt-get apt-cache dpkg-deb ldconfig buildah; do
  command -v "$c" >/dev/null 2>&1 || { log "$c is missing (make image installs buildah with tools/install-deps.sh --image)"; exit 1; }
done

work="$(mktemp -d /tmp/flannel-go-image.XXXXXX)"
ctr=""
buildah_() {
  if [ -n "${STORAGE_ROOT:-}" ]; then
    buildah --storage-driver vfs --root "$STORAGE_ROOT/root" --runroot "$STORAGE_ROOT/run" "$@"
  else
    buildah --storage-driver vfs "$@"
  fi
}
cleanup() {
  if [ -n "$ctr" ]; then buildah_ rm "$ctr" >/dev/null 2>&1 || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
rootfs="$work/rootfs"
mkdir -p "$rootfs" "$DEB_CACHE"

# Depends and Pre-Depends, recursively, of the roots (one apt-cache call per level): the
# first of alternatives, and for a virtual package its first provider.
declare -A seen=()
pkgs=()
level=("${roots[@]}")
while [ "${#level[@]}" -gt 0 ]; do
  ask=()
  for p in "${level[@]}"; do
    [ -n "${seen[$p]:-}" ] && continue
    seen[$p]=1
    case "$skip" in *" $p "*) continue ;; esac
    pkgs+=("$p")
    ask+=("$p")
  done
  level=()
  [ "${#ask[@]}" -gt 0 ] || break
  in_alt=0
  while IFS= read -r line; do
    case "$line" in
      " |"*Depends:*)
        [ "$in_alt" -eq 1 ] && continue
        in_alt=1
        dep="${line#*: }" ;;
      "  "*Depends:*)
        if [ "$in_alt" -eq 1 ]; then in_alt=0; continue; fi
        dep="${line#*: }" ;;
      *) in_alt=0; continue ;;
    esac
    dep="${dep%%:*}" # drop an architecture qualifier
    if [ "${dep#<}" != "$dep" ]; then
      dep="$(apt-cache showpkg "${dep//[<>]/}" | awk '/^Reverse Provides:/{f=1;next} f&&NF{print $1; exit}')"
      [ -n "$dep" ] || continue
    fi
    level+=("$dep")
  done < <(apt-cache depends --no-recommends --no-suggests --no-conflicts --no-breaks \
    --no-replaces --no-enhances "${ask[@]}")
done
log "packages: ${pkgs[*]}"

# The candidate versions' file names as apt-get download writes them (epoch ':' as %3a).
mapfile -t debs < <(apt-cache show --no-all-versions "${pkgs[@]}" | awk '
  /^Package:/ {p=$2} /^Version:/ {v=$2; gsub(/:/, "%3a", v)} /^Architecture:/ {a=$2}
  /^$/ {if (p != "") print p "_" v "_" a ".deb"; p=""}
  END {if (p != "") print p "_" v "_" a ".deb"}')
[ "${#debs[@]}" -eq "${#pkgs[@]}" ] || { log "apt-cache show: ${#debs[@]} files for ${#pkgs[@]} packages"; exit 1; }
(
  cd "$DEB_CACHE"
  need=()
  for i in "${!pkgs[@]}"; do
    [ -s "${debs[$i]}" ] || need+=("${pkgs[$i]}")
  done
  if [ "${#need[@]}" -gt 0 ]; then
    log "apt-get download ${need[*]}"
    apt-get download -q "${need[@]}" >&2
  fi
)
for d in "${debs[@]}"; do
  dpkg-deb -x "$DEB_CACHE/$d" "$rootfs"
done

# What Debian's maintainer scripts would have done, and nothing else.
rm -rf "$rootfs"/usr/share/doc "$rootfs"/usr/share/man "$rootfs"/usr/share/info \
  "$rootfs"/usr/share/lintian "$rootfs"/usr/share/locale "$rootfs"/usr/share/bug \
  "$rootfs"/usr/share/bash-completion "$rootfs"/usr/share/zsh \
  "$rootfs"/usr/lib/x86_64-linux-gnu/gconv "$rootfs"/usr/lib/*/gconv \
  "$rootfs"/usr/sbin/iptables-apply "$rootfs"/usr/sbin/ip6tables-apply
ln -sf /bin/dash "$rootfs/bin/sh"
# iptables: Debian selects iptables-nft or -legacy with update-alternatives; the image
# selects the one the host uses at the first call instead (iptables-select).
install -m 0755 "$here/iptables-select" "$rootfs/usr/sbin/iptables-select"
for c in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
  ln -sf iptables-select "$rootfs/usr/sbin/$c"
done
mkdir -p "$rootfs/etc" "$rootfs/run" "$rootfs/tmp" "$rootfs/proc" "$rootfs/sys" "$rootfs/dev" "$rootfs/opt/bin"
chmod 1777 "$rootfs/tmp"
printf 'include /etc/ld.so.conf.d/*.conf\n' >"$rootfs/etc/ld.so.conf"
ldconfig -r "$rootfs"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\n' >"$rootfs/etc/group"

log "building flanneld $VERSION"
(cd "$repo" && CGO_ENABLED=0 "$GO" build -trimpath -ldflags "-s -w -X main.version=$VERSION" \
  -o "$rootfs/opt/bin/flanneld" ./cmd/flanneld)

log "committing $IMAGE ($(du -sh "$rootfs" | cut -f1) uncompressed)"
ctr="$(buildah_ from scratch)"
buildah_ copy "$ctr" "$rootfs" / >/dev/null
buildah_ config \
  --entrypoint '["/opt/bin/flanneld"]' --cmd '' \
  --env PATH=/opt/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --created-by "flannel-go dist/image/build.sh" \
  --label org.opencontainers.image.title=flanneld \
  --label org.opencontainers.image.version="$VERSION" \
  --label org.opencontainers.image.source=https://github.com/flannel-go/flannel \
  "$ctr"
buildah_ commit --quiet --rm "$ctr" "$IMAGE" >/dev/null
ctr=""
if [ -n "$OUT" ]; then
  mkdir -p "$(dirname "$OUT")"
  rm -f "$OUT"
  buildah_ push --quiet "$IMAGE" "oci-archive:$OUT:$IMAGE"
  log "wrote $OUT"
fi
log "built $IMAGE"
