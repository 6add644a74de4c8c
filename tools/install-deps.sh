#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages the demo, the tests and the benchmarks use, with
# apt-get, when any of them is missing (a machine that has them all is left untouched).
# Used by `make deps` (and so by `make demo`, `make test`) and by .ci/run. Needs root.
#   --image   also what `make image` and its test (dist/image) need: buildah (about 10 s,
#             9 small packages) and file (the test checks the cross-compiled binaries
#             with it); `make image` and .ci/run pass it, `make test` does not.
set -euo pipefail

# package:command pairs: the command (or, for an absolute path, the file) proves the
# package is installed.
pkgs=(
  etcd-server:etcd
  etcd-client:etcdctl
  iproute2:ip
  iputils-ping:ping
  iptables:iptables
  nftables:nft
  tcpdump:tcpdump
  iperf3:iperf3
  ethtool:ethtool
  # the wireguard backend's tests: wg(8) reads and changes the devices, computes keys
  wireguard-tools:wg
  curl:curl
  ca-certificates:update-ca-certificates
  git:git
  make:make
  # dist/: mk-docker-opts.sh run with dash and BusyBox's ash, checked by shellcheck;
  # the docker.service drop-in checked by systemd-analyze and run with mount(8).
  dash:dash
  busybox:busybox
  mawk:awk
  shellcheck:shellcheck
  systemd:systemd-analyze
  mount:mount
  # Upstream flanneld for the mixed-cluster tests (tools/flanneld-upstream) is built with
  # cgo; gcc alone does not bring the C library's headers.
  gcc:gcc
  libc6-dev:/usr/include/stdlib.h
)
# Building the container image: buildah (it works without a container engine or daemon);
# file tells the architecture of the binaries built.
image_pkgs=(
  buildah:buildah
  file:file
)
for arg in "$@"; do
  case "$arg" in
    --image) pkgs+=("${image_pkgs[@]}") ;;
    *) echo "install-deps: unknown argument $arg (known: --image)" >&2; exit 2 ;;
  esac
done

missing=()
for pc in "${pkgs[@]}"; do
  proof="${pc#*:}"
  case "$proof" in
    /*) [ -e "$proof" ] ;;
    *) command -v "$proof" >/dev/null 2>&1 ;;
  esac || missing+=("${pc%%:*}")
done
if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages: ${missing[*]}; run as root (sudo make deps)" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-deps: missing packages: ${missing[*]}; no apt-get here, install them by hand" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
# The packaged etcd service is not used (the lab starts its own etcd processes).
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet etcd 2>/dev/null; then
  systemctl stop etcd || true
fi
