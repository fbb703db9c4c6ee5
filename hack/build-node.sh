#!/usr/bin/env bash
# Builds the parts of a real node for the end-to-end suite (make e2e): runc,
# containerd (+ ctr and the runc shim), crictl, and kubelet,
# kube-controller-manager and kube-scheduler v1.37.2 (tool directives in
# tools/go.mod). Cached under $REWIRE_TOOLS_CACHE/node-<hash> by the hash of
# tools/go.mod + tools/go.sum + the pinned versions, so later runs take a
# second. Prints the directory holding the binaries on its last line of stdout.
# runc needs cgo and libseccomp (Debian: gcc libseccomp-dev pkg-config).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${REWIRE_TOOLS_CACHE:-/var/cache/rewire-tools}
runc_version=v1.4.3
containerd_version=v2.4.2
crictl_version=v1.37.0
key=node-$(cat "$root/tools/go.mod" "$root/tools/go.sum" | sha256sum | cut -c1-16)-$runc_version-$containerd_version-$crictl_version
out=$cache/$key
log() { echo "build-node: $*" >&2; }

want=(runc containerd containerd-shim-runc-v2 ctr crictl kubelet kube-controller-manager kube-scheduler)
missing=0
for b in "${want[@]}"; do [ -x "$out/$b" ] || missing=1; done
if [ "$missing" = 0 ]; then echo "$out"; exit 0; fi

mkdir -p "$out.tmp"
start=$SECONDS
step() { # step NAME CMD...: runs CMD and logs its wall time
  local name=$1 t=$SECONDS
  shift
  log "$name ..."
  "$@"
  log "$name: $((SECONDS - t)) s"
}
k8s_ldflags="-s -w -X k8s.io/component-base/version.gitVersion=v1.37.2 -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37"

step "runc $runc_version (cgo, seccomp)" env GOBIN="$out.tmp" CGO_ENABLED=1 \
  go install -tags seccomp -ldflags '-s -w' "github.com/opencontainers/runc@$runc_version"
step "containerd $containerd_version" env GOBIN="$out.tmp" CGO_ENABLED=0 \
  go install -tags 'no_btrfs no_devmapper no_zfs' -ldflags '-s -w' \
  "github.com/containerd/containerd/v2/cmd/containerd@$containerd_version" \
  "github.com/containerd/containerd/v2/cmd/ctr@$containerd_version" \
  "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$containerd_version"
step "crictl $crictl_version" env GOBIN="$out.tmp" CGO_ENABLED=0 \
  go install -ldflags '-s -w' "sigs.k8s.io/cri-tools/cmd/crictl@$crictl_version"
for b in kubelet kube-controller-manager kube-scheduler; do
  step "$b v1.37.2" env CGO_ENABLED=0 sh -c "cd '$root/tools' && go build -ldflags '$k8s_ldflags' -o '$out.tmp/$b' k8s.io/kubernetes/cmd/$b"
done
rm -rf "$out" && mv "$out.tmp" "$out"
log "done in $((SECONDS - start)) s -> $out"
echo "$out"
