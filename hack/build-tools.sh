#!/usr/bin/env bash
# Builds the heavy test tools (etcd, kube-apiserver, kubectl, helm, flanneld) and the reference CNI plugins,
# and caches them by the hash of tools/go.mod + tools/go.sum so later runs take a second.
# Prints the directory holding the binaries on its last line of stdout.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${REWIRE_TOOLS_CACHE:-/var/cache/rewire-tools}
plugins_version=v1.10.0
key=$(cat "$root/tools/go.mod" "$root/tools/go.sum" | sha256sum | cut -c1-16)-$plugins_version
out=$cache/$key
log() { echo "build-tools: $*" >&2; }

whereabouts_version=v0.9.2
# whereabouts (cluster-wide IPAM) and its CRDs, built in a scratch module with
# its own dependency versions; added to an existing tools dir when missing.
build_whereabouts() {
  local dir=$1 tmp src crd
  log "whereabouts $whereabouts_version (about 2.5 min cold)"
  tmp=$(mktemp -d)
  (cd "$tmp" && go mod init rewire-whereabouts >/dev/null 2>&1 &&
    GOFLAGS=-mod=mod go get "github.com/k8snetworkplumbingwg/whereabouts/cmd@$whereabouts_version" 2>/dev/null &&
    CGO_ENABLED=0 go build -ldflags '-s -w' -o "$dir/whereabouts.tmp" github.com/k8snetworkplumbingwg/whereabouts/cmd) || return 1
  src=$(cd "$tmp" && go list -m -f '{{.Dir}}' github.com/k8snetworkplumbingwg/whereabouts) || return 1
  for crd in ippools overlappingrangeipreservations; do
    install -m 0644 "$src/doc/crds/whereabouts.cni.cncf.io_$crd.yaml" "$dir/whereabouts-crd-$crd.yaml" || return 1
  done
  rm -rf "$tmp"
  mv "$dir/whereabouts.tmp" "$dir/whereabouts"
}

helm_version=v4.3.1
# helm (the chart's lint, render and make e2e's install), built like
# whereabouts in a scratch module with its own dependency versions (tools/go.mod
# keys the cache: changing it rebuilds everything); added when missing.
build_helm() {
  local dir=$1 tmp
  # One build at a time: test runs started together wait for the first.
  exec 9>"$dir/.helm.lock" && flock 9 || return 1
  if [ -x "$dir/helm" ]; then exec 9>&-; return 0; fi
  log "helm $helm_version (cold: 10.6 min of CPU, 5-6 min on 2 idle cores, far more on busy ones; cached afterwards)"
  tmp=$(mktemp -d)
  (cd "$tmp" && go mod init rewire-helm >/dev/null 2>&1 &&
    GOFLAGS=-mod=mod go get "helm.sh/helm/v4/cmd/helm@$helm_version" 2>/dev/null &&
    CGO_ENABLED=0 go build -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$helm_version" \
      -o "$dir/helm.tmp$$" helm.sh/helm/v4/cmd/helm) || return 1
  rm -rf "$tmp"
  mv "$dir/helm.tmp$$" "$dir/helm"
  exec 9>&-
}

flannel_version=v0.28.11
flannel_plugin_version=v0.9.1
# flanneld (the multi-node cluster's real CNI daemon) and flannel's CNI
# plugin (containernetworking/plugins meta/flannel, whose last release is
# v0.9.1; kube-flannel ships flannel-io/cni-plugin, which the module proxy
# does not serve and whose ADD/DEL are the same), added when missing.
# flanneld cannot be built with a plain `go install`: its tencentvpc backend
# needs a tencentcloud-sdk-go module the proxy has no zip of. It is built
# from flannel's module source with that one backend's import removed
# (vxlan, host-gw and the others are untouched), with cgo for the udp
# backend.
build_flannel() {
  local dir=$1 tmp src
  exec 8>"$dir/.flannel.lock" && flock 8 || return 1
  if [ "$(cat "$dir/.flannel-version" 2>/dev/null)" = "$flannel_version $flannel_plugin_version" ]; then exec 8>&-; return 0; fi
  log "flanneld $flannel_version and flannel's CNI plugin $flannel_plugin_version (about 3 min cold)"
  tmp=$(mktemp -d)
  (cd "$tmp" && go mod init rewire-flannel >/dev/null 2>&1 &&
    GOFLAGS=-mod=mod go mod download "github.com/flannel-io/flannel@$flannel_version") || return 1
  src=$(cd "$tmp" && GOFLAGS=-mod=mod go mod download -json "github.com/flannel-io/flannel@$flannel_version" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p') || return 1
  cp -r "$src" "$tmp/flannel" && chmod -R u+w "$tmp/flannel" || return 1
  grep -q '_ "github.com/flannel-io/flannel/pkg/backend/tencentvpc"' "$tmp/flannel/main.go" || {
    log "flannel $flannel_version: main.go no longer imports the tencentvpc backend; check hack/build-tools.sh"; return 1; }
  sed -i '/_ "github.com\/flannel-io\/flannel\/pkg\/backend\/tencentvpc"/d' "$tmp/flannel/main.go"
  (cd "$tmp/flannel" && CGO_ENABLED=1 GOFLAGS=-mod=mod go build -ldflags "-s -w -X github.com/flannel-io/flannel/pkg/version.Version=$flannel_version" \
    -o "$dir/flanneld.tmp" .) || return 1
  (cd "$tmp" && GOBIN="$tmp/bin" CGO_ENABLED=0 go install -ldflags '-s -w' \
    "github.com/containernetworking/plugins/plugins/meta/flannel@$flannel_plugin_version") || return 1
  mv "$tmp/bin/flannel" "$dir/flannel" && mv "$dir/flanneld.tmp" "$dir/flanneld" || return 1
  chmod -R u+w "$tmp" && rm -rf "$tmp"
  echo "$flannel_version $flannel_plugin_version" >"$dir/.flannel-version"
  exec 8>&-
}

want=(etcd kube-apiserver kubectl bridge macvlan host-local static tuning bandwidth portmap ptp loopback)
missing=0
for b in "${want[@]}"; do [ -x "$out/$b" ] || missing=1; done
if [ "$missing" = 0 ]; then
  [ -x "$out/whereabouts" ] || build_whereabouts "$out" || { log "building whereabouts failed"; exit 1; }
  [ -x "$out/helm" ] || build_helm "$out" || { log "building helm failed"; exit 1; }
  build_flannel "$out" || { log "building flannel failed"; exit 1; }
  echo "$out"; exit 0
fi

mkdir -p "$out.tmp"
export CGO_ENABLED=0
start=$SECONDS
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=v1.37.2 -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37"
log "reference CNI plugins $plugins_version (about 1 min cold)"
GOBIN="$out.tmp" go install -ldflags '-s -w' "github.com/containernetworking/plugins/plugins/...@$plugins_version"
log "etcd (about 1 min cold)"
(cd "$root/tools" && go build -ldflags '-s -w' -o "$out.tmp/etcd" go.etcd.io/etcd/server/v3)
log "kubectl (about 1 min cold)"
(cd "$root/tools" && go build -ldflags "$ldflags" -o "$out.tmp/kubectl" k8s.io/kubernetes/cmd/kubectl)
log "kube-apiserver (5-12 min cold on 2 cores; cached afterwards)"
(cd "$root/tools" && go build -ldflags "$ldflags" -o "$out.tmp/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver)
build_whereabouts "$out.tmp" || { log "building whereabouts failed"; exit 1; }
build_helm "$out.tmp" || { log "building helm failed"; exit 1; }
build_flannel "$out.tmp" || { log "building flannel failed"; exit 1; }
rm -rf "$out" && mv "$out.tmp" "$out"
log "done in $((SECONDS - start)) s -> $out"
echo "$out"
