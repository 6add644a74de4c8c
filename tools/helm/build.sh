#!/usr/bin/env bash
# Builds helm (v4) from the Go module proxy for the chart's tests (dist/chart) and caches it
# by version: the build (~2 min on 2 cores) is skipped when the binary exists. Prints the
# binary's path on stdout. Environment:
#   FLANNEL_GO_CACHE  cache directory (default $HOME/.cache/flannel-go)
#   GO                go command (default: go on PATH, else /usr/local/go/bin/go)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
version="$(cat "$here/VERSION")"
go_cmd="${GO:-$(command -v go 2>/dev/null || echo /usr/local/go/bin/go)}"
cache="${FLANNEL_GO_CACHE:-${HOME:-/root}/.cache/flannel-go}"
out="$cache/helm-$version"

if [ -x "$out" ]; then
  echo "$out"
  exit 0
fi

mkdir -p "$cache"
tmp="$(mktemp -d "$cache/.helm-$version.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
echo "build.sh: building helm $version into $out (takes a few minutes)" >&2
GOBIN="$tmp" CGO_ENABLED=0 GOFLAGS=-trimpath "$go_cmd" install -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$version" "helm.sh/helm/v4/cmd/helm@$version"
mv -f "$tmp/helm" "$out"
echo "$out"
