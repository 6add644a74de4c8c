#!/usr/bin/env bash
# Builds a real kube-apiserver from the k8s.io/kubernetes module for the tests and caches it
# by version: the build (~5 min, ~2.4 GB RAM on 2 cores) is skipped when the binary exists.
# Prints the binary's path on stdout. Environment:
#   FLANNEL_GO_CACHE  cache directory (default $HOME/.cache/flannel-go)
#   GO                go command (default: go on PATH, else /usr/local/go/bin/go)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
version="$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" {print $3}' "$here/go.mod")"
if [ -z "$version" ]; then
  echo "build.sh: cannot read the k8s.io/kubernetes version from $here/go.mod" >&2
  exit 1
fi
go_cmd="${GO:-$(command -v go 2>/dev/null || echo /usr/local/go/bin/go)}"
cache="${FLANNEL_GO_CACHE:-${HOME:-/root}/.cache/flannel-go}"
out="$cache/kube-apiserver-$version"

if [ -x "$out" ]; then
  echo "$out"
  exit 0
fi

major="${version#v}"; major="${major%%.*}"
minor="${version#v*.}"; minor="${minor%%.*}"
pkg=k8s.io/component-base/version
ldflags="-s -w -X $pkg.gitVersion=$version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"

mkdir -p "$cache"
tmp="$(mktemp "$cache/.kube-apiserver-$version.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
echo "build.sh: building kube-apiserver $version into $out (takes several minutes)" >&2
(cd "$here" && CGO_ENABLED=0 "$go_cmd" build -trimpath -ldflags "$ldflags" -o "$tmp" k8s.io/kubernetes/cmd/kube-apiserver)
chmod 0755 "$tmp"
mv -f "$tmp" "$out"
trap - EXIT
echo "$out"
