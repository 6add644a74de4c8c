#!/usr/bin/env bash
# Builds the CNI reference plugins (bridge, host-local, portmap, loopback and the rest of
# github.com/containernetworking/plugins) that the CNI plugin's end-to-end test delegates
# to, with `go install`, and caches them by version: nothing is built when the directory
# exists. The version is in VERSION beside this script. Prints the directory on stdout.
# Environment:
#   FLANNEL_GO_CACHE  cache directory (default $HOME/.cache/flannel-go)
#   GO                go command (default: go on PATH, else /usr/local/go/bin/go)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
version="$(tr -d ' \n' <"$here/VERSION")"
case "$version" in
  v[0-9]*) ;;
  *) echo "build.sh: bad version '$version' in $here/VERSION" >&2; exit 1 ;;
esac
go_cmd="${GO:-$(command -v go 2>/dev/null || echo /usr/local/go/bin/go)}"
cache="${FLANNEL_GO_CACHE:-${HOME:-/root}/.cache/flannel-go}"
out="$cache/cni-plugins-$version"

if [ -x "$out/bridge" ]; then
  echo "$out"
  exit 0
fi

mkdir -p "$cache"
tmp="$(mktemp -d "$cache/.cni-plugins-$version.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
echo "build.sh: building the CNI plugins $version into $out" >&2
# Outside any module: go install pkg@version ignores the current module.
# The ldflag makes each plugin's VERSION output name the release, as release builds do.
(cd "$tmp" && GOBIN="$tmp" CGO_ENABLED=0 "$go_cmd" install -trimpath \
  -ldflags "-s -w -X github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion=$version" \
  "github.com/containernetworking/plugins/plugins/...@$version")
for p in bridge host-local portmap loopback; do
  if [ ! -x "$tmp/$p" ]; then
    echo "build.sh: $p missing after go install" >&2
    exit 1
  fi
done
chmod 0755 "$tmp"
rm -rf "$out"
mv "$tmp" "$out"
trap - EXIT
echo "$out"
