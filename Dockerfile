# The flannel image: flanneld, the flannel CNI plugin and install-conf, built statically
# from this repository, on a Debian runtime with iptables (nft and legacy), nftables and
# iproute2.
#
#   docker build -t flannel-go/flannel:dev .          (or: buildah bud -t … .)
#
# Build arguments:
#   GOLANG_IMAGE, DEBIAN_IMAGE  the base images; the defaults are the official ones. Without
#                               a registry, `make image` passes images made from this
#                               machine's Go and Debian packages (dist/image/local-bases.sh).
#   VERSION, COMMIT             what `flanneld --version` and `flannel --version` print.
#   GOPROXY                     for the module downloads (e.g. GOPROXY=off with a module
#                               cache mounted at /go/pkg/mod, as `make image` does).
#   TARGETARCH                  set by the builder from --platform (unset: the build
#                               machine's); the Go stage always runs on the build machine
#                               and cross-compiles.
# The stage "binaries" holds only the three binaries (for --target binaries --output).
ARG GOLANG_IMAGE=golang:1.26-bookworm
ARG DEBIAN_IMAGE=debian:bookworm-slim

FROM --platform=$BUILDPLATFORM ${GOLANG_IMAGE} AS build
ARG TARGETOS=linux
ARG TARGETARCH
ARG GOPROXY=
ARG VERSION=dev
ARG COMMIT=
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN set -eu; \
    ldflags="-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}"; \
    export CGO_ENABLED=0 GOOS="${TARGETOS}" GOARCH="${TARGETARCH}"; \
    mkdir -p /out/bin /out/root/opt/bin /out/root/usr/sbin; \
    go build -trimpath -ldflags "$ldflags" -o /out/bin/ ./cmd/flanneld ./cmd/flannel ./cmd/install-conf; \
    cp /out/bin/flanneld /out/bin/install-conf /out/root/opt/bin/; \
    cp /out/bin/flannel /out/root/flannel; \
    install -m 0755 dist/mk-docker-opts.sh /out/root/opt/bin/mk-docker-opts.sh; \
    install -m 0755 dist/image/iptables-select /out/root/usr/sbin/iptables-select; \
    for c in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do \
      ln -s iptables-select "/out/root/usr/sbin/$c"; \
    done

FROM scratch AS binaries
COPY --from=build /out/bin/ /

FROM ${DEBIAN_IMAGE}
# iptables (both backends), nft, and ip and awk for mk-docker-opts.sh: installed with
# apt-get unless the base image already has them (the local base of `make image` does).
RUN for c in xtables-nft-multi xtables-legacy-multi nft ip awk mktemp mv; do \
      command -v "$c" >/dev/null || missing=1; \
    done; \
    if [ -n "${missing:-}" ]; then \
      apt-get update && \
      DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends iptables nftables iproute2 && \
      rm -rf /var/lib/apt/lists/*; \
    fi
# /opt/bin/flanneld, install-conf and mk-docker-opts.sh; the plugin at /flannel, where the
# DaemonSet's init container copies it from; iptables and friends as iptables-select, which
# picks the backend the host uses (Debian's alternatives links are replaced).
COPY --from=build /out/root/ /
ARG VERSION=dev
ENV PATH=/opt/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
LABEL org.opencontainers.image.title=flannel \
      org.opencontainers.image.version=${VERSION} \
      org.opencontainers.image.source=https://github.com/flannel-go/flannel
ENTRYPOINT ["/opt/bin/flanneld"]
