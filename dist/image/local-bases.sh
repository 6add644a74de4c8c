#!/usr/bin/env bash
# Makes, without a registry, the two base images the top-level Dockerfile builds FROM when
# no registry is reachable (make image passes them as GOLANG_IMAGE and DEBIAN_IMAGE):
#   golang  the Go toolchain of this machine (GOROOT, at /usr/local/go), with dash and
#           coreutils for the RUN steps and the machine's CA bundle (for a GOPROXY);
#           environment as the official golang image has it (GOPATH=/go, GOTOOLCHAIN=local);
#   debian  a minimal runtime from this machine's Debian packages: iptables (nft and legacy
#           backends), nftables, iproute2, mawk and coreutils (mk-docker-opts.sh), dash as
#           /bin/sh, netbase and the libraries they depend on, with an ld.so.cache, without
#           documentation.
# Both are root filesystems made with apt-get download and dpkg-deb -x, committed FROM
# scratch with buildah (vfs storage).
#
# Environment (all optional):
#   GOLANG_IMAGE   name of the golang base  (default localhost/flannel-go/golang:<go version>)
#   DEBIAN_IMAGE   name of the debian base  (default localhost/flannel-go/debian:bookworm)
#   STORAGE_ROOT   buildah storage root     (default: buildah's, /var/lib/containers/storage)
#   DEB_CACHE      where the .deb files are kept between builds (default ~/.cache/flannel-go/debs)
#   GO             the go command whose GOROOT goes into the golang base
# Each image is made again only when its inputs changed. Prints the two names on stdout
# (GOLANG_IMAGE=… and DEBIAN_IMAGE=… lines).
# Needs root (dpkg-deb ownership, buildah), apt-get, dpkg-deb, ldconfig and buildah.
set -euo pipefail

GO="${GO:-$(command -v go 2>/dev/null || echo /usr/local/go/bin/go)}"
goroot="$("$GO" env GOROOT)"
GOLANG_IMAGE="${GOLANG_IMAGE:-localhost/flannel-go/golang:$("$GO" env GOVERSION)}"
DEBIAN_IMAGE="${DEBIAN_IMAGE:-localhost/flannel-go/debian:bookworm}"
DEB_CACHE="${DEB_CACHE:-${FLANNEL_GO_CACHE:-$HOME/.cache/flannel-go}/debs}"

# Dependencies never followed: only needed to install or remove packages with dpkg, which
# these images never do (dash depends on them for its maintainer scripts).
skip=" dpkg debianutils "

log() { printf 'local-bases: %s\n' "$*" >&2; }
for c in apt-get apt-cache dpkg-deb ldconfig buildah flock; do
  command -v "$c" >/dev/null 2>&1 || { log "$c is missing (tools/install-deps.sh --image installs buildah)"; exit 1; }
done

# One run at a time per storage (tests build the image in parallel): the second waits and
# then finds the images up to date.
lock="${STORAGE_ROOT:-/run/lock}/flannel-go-local-bases.lock"
mkdir -p "$(dirname "$lock")"
exec 9>"$lock"
flock 9

work="$(mktemp -d /tmp/flannel-go-bases.XXXXXX)"
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
mkdir -p "$DEB_CACHE"

# resolve PACKAGE...: sets pkgs to the packages and their Depends and Pre-Depends,
# recursively (one apt-cache call per level: the first of alternatives, and for a virtual
# package its first provider).
resolve() {
  local -A seen=()
  local level=("$@") ask p line dep in_alt
  pkgs=()
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
}

# debroot DIR: unpacks the packages of pkgs into DIR, as Debian's maintainer scripts would
# leave them minus documentation, with /bin/sh, an ld.so.cache and a root user.
debroot() {
  local rootfs="$1"
  log "$(basename "$rootfs"): ${pkgs[*]}"

  # The candidate versions' file names as apt-get download writes them (epoch ':' as %3a).
  local debs
  mapfile -t debs < <(apt-cache show --no-all-versions "${pkgs[@]}" | awk '
    /^Package:/ {p=$2} /^Version:/ {v=$2; gsub(/:/, "%3a", v)} /^Architecture:/ {a=$2}
    /^$/ {if (p != "") print p "_" v "_" a ".deb"; p=""}
    END {if (p != "") print p "_" v "_" a ".deb"}')
  [ "${#debs[@]}" -eq "${#pkgs[@]}" ] || { log "apt-cache show: ${#debs[@]} files for ${#pkgs[@]} packages"; exit 1; }
  (
    cd "$DEB_CACHE"
    local need=() i
    for i in "${!pkgs[@]}"; do
      [ -s "${debs[$i]}" ] || need+=("${pkgs[$i]}")
    done
    if [ "${#need[@]}" -gt 0 ]; then
      log "apt-get download ${need[*]}"
      apt-get download -q "${need[@]}" >&2
    fi
  )
  mkdir -p "$rootfs"
  local d
  for d in "${debs[@]}"; do
    dpkg-deb -x "$DEB_CACHE/$d" "$rootfs"
  done
  rm -rf "$rootfs"/usr/share/doc "$rootfs"/usr/share/man "$rootfs"/usr/share/info \
    "$rootfs"/usr/share/lintian "$rootfs"/usr/share/locale "$rootfs"/usr/share/bug \
    "$rootfs"/usr/share/bash-completion "$rootfs"/usr/share/zsh "$rootfs"/usr/lib/*/gconv
  ln -sf /bin/dash "$rootfs/bin/sh"
  # The alternatives links Debian's maintainer scripts would make (update-alternatives).
  if [ -e "$rootfs/usr/bin/mawk" ]; then ln -sf mawk "$rootfs/usr/bin/awk"; fi
  mkdir -p "$rootfs/etc" "$rootfs/run" "$rootfs/tmp" "$rootfs/proc" "$rootfs/sys" "$rootfs/dev" "$rootfs/root"
  chmod 1777 "$rootfs/tmp"
  printf 'include /etc/ld.so.conf.d/*.conf\n' >"$rootfs/etc/ld.so.conf"
  ldconfig -r "$rootfs"
  printf 'root:x:0:0:root:/root:/bin/sh\n' >"$rootfs/etc/passwd"
  printf 'root:x:0:\n' >"$rootfs/etc/group"
}

# fresh IMAGE KEY: true unless the storage holds IMAGE made from the same inputs (its label
# flannel-go.inputs is KEY); an outdated IMAGE is removed.
fresh() {
  local have
  have="$(buildah_ inspect --type image --format '{{index .OCIv1.Config.Labels "flannel-go.inputs"}}' "$1" 2>/dev/null || true)"
  [ "$have" = "$2" ] && return 1
  buildah_ rmi "$1" >/dev/null 2>&1 || true
  return 0
}

# commit ROOTFS IMAGE KEY CONFIG-ARGS...: the root filesystem as a one-layer image FROM
# scratch, labelled with the key of its inputs.
commit() {
  local rootfs="$1" image="$2" key="$3"
  shift 3
  log "committing $image ($(du -sh "$rootfs" | cut -f1) uncompressed)"
  ctr="$(buildah_ from scratch)"
  buildah_ copy "$ctr" "$rootfs" / >/dev/null
  buildah_ config --created-by "flannel-go dist/image/local-bases.sh" --label flannel-go.inputs="$key" "$@" "$ctr"
  buildah_ commit --quiet --rm "$ctr" "$image" >/dev/null
  ctr=""
}

# Each image is made again only when its inputs changed: this script, the package versions
# apt would install, and for golang the toolchain.
self="$(sha256sum "$0" | cut -c1-16)"
key() { { echo "$self"; apt-cache show --no-all-versions "${pkgs[@]}" | grep -E '^(Package|Version):'; } | sha256sum | cut -c1-16; }

resolve iptables nftables iproute2 mawk coreutils dash netbase
k="$(key)"
if fresh "$DEBIAN_IMAGE" "$k"; then
  debroot "$work/debian"
  commit "$work/debian" "$DEBIAN_IMAGE" "$k" \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --cmd /bin/sh
else
  log "$DEBIAN_IMAGE is up to date"
fi

resolve dash coreutils
goversion="$("$GO" env GOVERSION)"
k="$(key)-$goversion"
if fresh "$GOLANG_IMAGE" "$k"; then
  debroot "$work/golang"
  mkdir -p "$work/golang/usr/local/go" "$work/golang/go/bin" "$work/golang/etc/ssl/certs"
  # The toolchain without its own tests and API history, which builds never read.
  for f in "$goroot"/*; do
    case "${f##*/}" in test | api | doc) continue ;; esac
    cp -a "$f" "$work/golang/usr/local/go/"
  done
  if [ -r /etc/ssl/certs/ca-certificates.crt ]; then
    cp /etc/ssl/certs/ca-certificates.crt "$work/golang/etc/ssl/certs/"
  fi
  commit "$work/golang" "$GOLANG_IMAGE" "$k" \
    --env PATH=/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env GOPATH=/go --env GOTOOLCHAIN=local --env GOLANG_VERSION="${goversion#go}" \
    --workingdir /go --cmd /bin/sh
else
  log "$GOLANG_IMAGE is up to date"
fi
echo "GOLANG_IMAGE=$GOLANG_IMAGE"
echo "DEBIAN_IMAGE=$DEBIAN_IMAGE"
