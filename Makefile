# flannel-go. Network-namespace tests and the demo need root: sudo make test / sudo make demo.
# sudo's PATH often lacks Go, hence the fallback to /usr/local/go.
GO    ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
GOFMT ?= $(shell command -v gofmt 2>/dev/null || echo /usr/local/go/bin/gofmt)

PKG     := github.com/flannel-go/flannel
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo v0.0.0-dev)
COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS := -X main.version=$(VERSION)
# The CNI plugin also names its commit (CNI Plugin flannel version ... commit <sha>).
PLUGIN_LDFLAGS := $(LDFLAGS) -X main.commit=$(COMMIT)

TEST_TIMEOUT ?= 40m
E2E_TIMEOUT  ?= 30m
DEMO_ARGS    ?=

.PHONY: all deps build test unit e2e demo bench bench-control bench-net bench-rules bench-heal vet fmt-check tidy-check clean kube-apiserver cni-plugins helm bench-kube image image-binaries bench-restart bench-plot flanneld-upstream bench-diagnose

all: build

# The Debian/Ubuntu packages the demo and the tests use (apt-get, only the missing ones).
deps:
	tools/install-deps.sh

# Static, as the image ships it (no libc mapped: about 1.4 MB less resident memory):
# the daemon and the flannel CNI plugin.
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/flanneld ./cmd/flanneld
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(PLUGIN_LDFLAGS)' -o bin/flannel ./cmd/flannel

# Everything: unit, integration (real etcd, real kube-apiserver, real kernel in namespaces)
# and e2e. Needs root. Builds the kube-apiserver, the CNI reference plugins, helm and
# upstream flanneld first (cached; see below).
test: deps kube-apiserver cni-plugins helm flanneld-upstream
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...

# Only what needs neither root nor etcd.
unit:
	$(GO) test -short -count=1 -timeout 10m ./...

# The end-to-end suite (flanneld in the netns lab) and the lab's own tests, verbose. Needs root.
e2e: deps cni-plugins
	$(GO) test -count=1 -timeout $(E2E_TIMEOUT) -v ./e2e/...

# A 3-node cluster in network namespaces with an all-pairs ping table; Ctrl-C tears it down.
# Options: make demo DEMO_ARGS='-nodes 5 -keep'
demo: deps build
	$(GO) run ./e2e/cmd/demo -flanneld bin/flanneld $(DEMO_ARGS)

# Every benchmark of Documentation/benchmarks.md, one after the other, each with upstream
# flanneld beside ours in the same lab and the same run (about 40 minutes), then the
# charts and tables of the page from their results (bench-plot). Needs root. Each also
# runs on its own (bench-control, bench-net, bench-rules, bench-heal, bench-restart,
# bench-kube), writing $(BENCH_DATA)/<name>.json.
bench: bench-control bench-net bench-rules bench-heal bench-restart bench-kube
	$(MAKE) bench-plot

# Upstream flanneld to measure beside ours: "build" (tools/flanneld-upstream, built once
# and cached), a binary, or empty to measure ours alone.
UPSTREAM   ?= build
# Where the benchmarks write their results and bench-plot reads them.
BENCH_DATA ?= Documentation/benchdata
bench_upstream = $(if $(UPSTREAM),-upstream $(UPSTREAM))
bench_needs    = build $(if $(filter build,$(UPSTREAM)),flanneld-upstream)

# Control plane for 1k/5k/20k synthetic peers, median of 3 (upstream: 1 run at 20k, where
# it takes about 25 s to converge): convergence from start, RSS, churn (n/5 leases removed
# + n/5 added) and idle CPU over a 30 s resync period.
# Options: make bench-control BENCH_ARGS='-sizes 1000 -runs 5 -idle 10s -v' (also honoured by make bench)
BENCH_ARGS ?=
bench-control: $(bench_needs)
	$(GO) run ./e2e/cmd/bench -flanneld bin/flanneld $(bench_upstream) -json $(BENCH_DATA)/control.json $(BENCH_ARGS)

# Data plane: TCP throughput (iperf3) and ping RTT pod to pod across two lab nodes for
# vxlan, host-gw and udp (ours and upstream's, one lab each) and over the underlay, as
# ratios within each round; median of 3.
# Options: make bench-net BENCH_NET_ARGS='-runs 5 -time 10 -paths vxlan,udp -perf /tmp/prof'
# A/B of two builds (-compare, no -json): see Documentation/benchmarks.md, Method, Data plane.
BENCH_NET_ARGS ?=
bench-net: deps $(bench_needs)
	$(GO) run ./e2e/cmd/benchnet -flanneld bin/flanneld $(bench_upstream) -json $(BENCH_DATA)/net.json $(BENCH_NET_ARGS)

# Traffic-rule healing latency (fault -> rules intact) per fault and mode, and idle CPU.
BENCH_RULES_ARGS ?=
bench-rules: $(bench_needs)
	$(GO) run ./e2e/cmd/benchrules -flanneld bin/flanneld $(bench_upstream) -json $(BENCH_DATA)/rules.json $(BENCH_RULES_ARGS)

# Kernel state healing: time from a fault (route, neighbour, FDB entry, address, MTU,
# device deleted; stale entries added) until flanneld restored it, per backend, median of 3.
# Options: make bench-heal BENCH_HEAL_ARGS='-runs 5 -backends vxlan'
BENCH_HEAL_ARGS ?=
bench-heal: $(bench_needs)
	$(GO) run ./e2e/cmd/benchheal -flanneld bin/flanneld $(bench_upstream) -json $(BENCH_DATA)/heal.json $(BENCH_HEAL_ARGS)

# Kubernetes mode at scale: time to program 1,000 and 5,000 annotated nodes and peak RSS,
# median of 3, against the real kube-apiserver.
# Options: make bench-kube BENCH_KUBE_ARGS='-nodes 5000 -runs 5'
BENCH_KUBE_ARGS ?=
bench-kube: $(bench_needs) kube-apiserver
	$(GO) run ./e2e/cmd/benchkube -flanneld bin/flanneld $(bench_upstream) -json $(BENCH_DATA)/kube.json $(BENCH_KUBE_ARGS)

# flanneld diagnose --peers=all on a node with 1,000 synthetic peers whose every probe
# times out (1 s each): wall time, median of 5 (target: 3 s). Not part of make bench.
# Options: make bench-diagnose BENCH_DIAGNOSE_ARGS='-peers 5000 -runs 9'
BENCH_DIAGNOSE_ARGS ?=
bench-diagnose: build
	$(GO) run ./e2e/cmd/benchdiagnose -flanneld bin/flanneld -json $(BENCH_DATA)/diagnose.json $(BENCH_DIAGNOSE_ARGS)

# The charts (Documentation/img/bench-*.svg) and the tables of Documentation/benchmarks.md
# from the results in $(BENCH_DATA); prints every figure as ours ÷ upstream's.
bench-plot:
	$(GO) run ./e2e/cmd/benchplot -data $(BENCH_DATA) -img Documentation/img -doc Documentation/benchmarks.md

# Upstream flanneld (flannel-io/flannel), built from the module proxy's source once per
# version (tools/flanneld-upstream/VERSION) into $FLANNEL_GO_CACHE or ~/.cache/flannel-go
# (about a minute the first time), for the benchmarks and the mixed-cluster and upgrade
# tests (e2e/mixed_test.go). Without it those tests skip, or fail when CI=true.
flanneld-upstream:
	GO=$(GO) tools/flanneld-upstream/build.sh

# A real kube-apiserver for the Kubernetes-mode tests, built from the tools/kube-apiserver
# module once per version into $FLANNEL_GO_CACHE or ~/.cache/flannel-go (a few minutes the
# first time, nothing afterwards). Without it those tests skip, or fail when CI=true.
kube-apiserver:
	GO=$(GO) tools/kube-apiserver/build.sh

# The CNI reference plugins (bridge, host-local, portmap, loopback, ...) the CNI plugin's
# end-to-end test delegates to, built with go install at the version in
# tools/cni-plugins/VERSION and cached like kube-apiserver (about half a minute the first
# time). Without them that test skips, or fails when CI=true.
cni-plugins:
	GO=$(GO) tools/cni-plugins/build.sh

# helm v4 for the chart's tests (dist/chart), built from the module proxy once per version
# (tools/helm/VERSION) into $FLANNEL_GO_CACHE or ~/.cache/flannel-go (about 2 minutes).
helm:
	GO=$(GO) tools/helm/build.sh

# The flannel image (flanneld, the flannel CNI plugin, install-conf) from the top-level
# Dockerfile, without a container engine or a registry: buildah builds it FROM base images
# made from this machine's Go and Debian packages (dist/image/local-bases.sh), with the Go
# modules of this machine's module cache (GOPROXY=off inside the build), and writes an OCI
# archive for `podman load` or `ctr images import` (Documentation/kubernetes.md#images).
# Needs root and apt-get. With a registry, `docker build .` or `buildah bud .` needs none of
# this. Options: make image IMAGE=registry.example/flannel:v1 IMAGE_ARCHIVE=/tmp/flannel.tar
#   IMAGE_STORAGE=/tmp/store (a buildah storage directory other than buildah's default)
# `make image-binaries ARCH=arm64` cross-compiles the three binaries into
# dist/image/out/linux-arm64 from the Dockerfile's "binaries" stage (no image is built).
IMAGE         ?= localhost/flannel-go/flannel:latest
IMAGE_ARCHIVE ?= dist/image/out/flannel.oci.tar
IMAGE_STORAGE ?=
ARCH          ?= arm64
NATIVE_ARCH   := $(shell $(GO) env GOARCH)
BINARIES_DIR  ?= dist/image/out/linux-$(ARCH)
BUILDAH       := buildah --storage-driver vfs $(if $(IMAGE_STORAGE),--root '$(IMAGE_STORAGE)/root' --runroot '$(IMAGE_STORAGE)/run')
LOCAL_BUD      = set -e; $(GO) mod download; \
	eval "$$(STORAGE_ROOT='$(IMAGE_STORAGE)' GO='$(GO)' dist/image/local-bases.sh)"; \
	$(BUILDAH) bud --isolation chroot --pull=never \
	  --build-arg GOLANG_IMAGE="$$GOLANG_IMAGE" --build-arg DEBIAN_IMAGE="$$DEBIAN_IMAGE" \
	  --build-arg GOPROXY=off --build-arg VERSION='$(VERSION)' --build-arg COMMIT='$(COMMIT)' \
	  --volume "$$($(GO) env GOMODCACHE)":/go/pkg/mod:ro --volume "$$($(GO) env GOCACHE)":/root/.cache/go-build
image:
	tools/install-deps.sh --image
	$(LOCAL_BUD) --build-arg TARGETARCH='$(NATIVE_ARCH)' -t '$(IMAGE)' .
	mkdir -p '$(dir $(IMAGE_ARCHIVE))' && rm -f '$(IMAGE_ARCHIVE)'
	$(BUILDAH) push --quiet '$(IMAGE)' 'oci-archive:$(IMAGE_ARCHIVE):$(IMAGE)'
	@echo "built $(IMAGE), archive $(IMAGE_ARCHIVE)"

image-binaries:
	tools/install-deps.sh --image
	rm -rf '$(BINARIES_DIR)' && mkdir -p '$(BINARIES_DIR)'
	$(LOCAL_BUD) --build-arg TARGETARCH='$(ARCH)' --target binaries --iidfile '$(BINARIES_DIR).iid' \
	  --output type=local,dest='$(BINARIES_DIR)' .
	$(BUILDAH) rmi "$$(cat '$(BINARIES_DIR).iid')" >/dev/null && rm -f '$(BINARIES_DIR).iid'
	file '$(BINARIES_DIR)'/*

# Pings lost across a kill -9 + restart (vxlan, host-gw) and the time from etcd's return
# after an outage to a new lease applied, median of 3. Options: BENCH_RESTART_ARGS='-runs 5'
BENCH_RESTART_ARGS ?=
bench-restart: $(bench_needs)
	$(GO) run ./e2e/cmd/benchrestart -flanneld bin/flanneld $(bench_upstream) -json $(BENCH_DATA)/restart.json $(BENCH_RESTART_ARGS)

vet:
	$(GO) vet ./...

fmt-check:
	@out="$$($(GOFMT) -l $$(find . -name '*.go' -not -path './.git/*' -not -path './.cache/*'))"; \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

# `go mod tidy` must leave every module of the repository (the root one and the tools
# module) as it is; the diff is printed otherwise.
tidy-check:
	@set -e; for mod in $$(git ls-files '*go.mod' 2>/dev/null || find . -name go.mod -not -path './.git/*'); do \
		dir=$$(dirname $$mod); echo "go mod tidy -diff in $$dir"; \
		(cd $$dir && $(GO) mod tidy -diff) || { echo "go mod tidy would change $$dir (run it there)"; exit 1; }; \
	done

clean:
	rm -rf bin dist/flanneld dist/image/out
