#!/usr/bin/env bash
# Builds upstream flanneld (github.com/flannel-io/flannel) for the side-by-side benchmarks
# and the mixed-cluster tests (e2e/mixed_test.go), cached by version: the build (about a
# minute on 2 cores) is skipped when the binary exists. Prints the binary's path on stdout.
# Environment:
#   FLANNEL_UPSTREAM_VERSION  upstream release to build (default: VERSION beside this script)
#   FLANNEL_GO_CACHE          cache directory (default $HOME/.cache/flannel-go)
#   GO                        go command (default: go on PATH, else /usr/local/go/bin/go)
#
# The module proxy serves upstream's source but not one of its dependencies (the Tencent
# cloud SDK), so the source is copied to a scratch directory, the tencentvpc backend (its
# only user) is removed from that copy, and the rest is built with -mod=mod. Nothing of
# upstream is kept but the binary. cgo stays on: upstream's udp backend needs it on amd64.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
version="${FLANNEL_UPSTREAM_VERSION:-$(tr -d ' \n' <"$here/VERSION")}"
case "$version" in
  v[0-9]*) ;;
  *) echo "build.sh: bad version '$version' (FLANNEL_UPSTREAM_VERSION or $here/VERSION)" >&2; exit 1 ;;
esac
module=github.com/flannel-io/flannel
go_cmd="${GO:-$(command -v go 2>/dev/null || echo /usr/local/go/bin/go)}"
cache="${FLANNEL_GO_CACHE:-${HOME:-/root}/.cache/flannel-go}"
out="$cache/flanneld-upstream-$version"

if [ -x "$out" ]; then
  echo "$out"
  exit 0
fi

mkdir -p "$cache"
scratch="$(mktemp -d "$cache/.flanneld-upstream-$version.XXXXXX")"
trap 'chmod -R u+w "$scratch" 2>/dev/null; rm -rf "$scratch"' EXIT
echo "build.sh: building upstream flanneld $version into $out (about a minute)" >&2

# Outside any module, so that our go.mod and go.sum stay untouched.
dir="$(cd "$scratch" && GOWORK=off GOFLAGS='' "$go_cmd" mod download -json "$module@$version" |
  sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')"
if [ -z "$dir" ] || [ ! -f "$dir/main.go" ]; then
  echo "build.sh: go mod download $module@$version gave no source directory" >&2
  exit 1
fi
src="$scratch/src"
cp -R "$dir" "$src"
chmod -R u+w "$src"
sed -i '\#"'"$module"'/pkg/backend/tencentvpc"#d' "$src/main.go"
rm -rf "$src/pkg/backend/tencentvpc"
if grep -rq --include='*.go' 'pkg/backend/tencentvpc' "$src"; then
  echo "build.sh: $module $version still imports pkg/backend/tencentvpc after the edit" >&2
  exit 1
fi

(cd "$src" && GOWORK=off GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=1 "$go_cmd" build -trimpath \
  -ldflags "-X $module/pkg/version.Version=$version" -o "$scratch/flanneld" .)
chmod 0755 "$scratch/flanneld"
mv -f "$scratch/flanneld" "$out"
echo "$out"
