#!/usr/bin/env bash
# make e2e: builds the node's parts (cached), brings a real single node up
# (hack/node.sh), runs the end-to-end suite (test/e2e) against it, and tears
# the node down whatever happens. Expects `make image e2e-images` done. Root.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
log() { echo "e2e: $*" >&2; }
t0=$SECONDS
tools=$(hack/build-tools.sh | tail -1)
hack/build-node.sh >/dev/null
log "tools ready in $((SECONDS - t0)) s"
hack/node.sh down >/dev/null 2>&1 || true # leftovers of an interrupted run
# The node's and the pods' logs are kept in bin/e2e-logs for a look afterwards.
keep_logs() {
  rm -rf bin/e2e-logs && mkdir -p bin/e2e-logs
  cp -r /var/lib/rewire-e2e/logs /var/lib/rewire-e2e/pod-logs bin/e2e-logs/ 2>/dev/null || true
}
trap 'keep_logs; hack/node.sh down' EXIT
t=$SECONDS
hack/node.sh up
log "node up in $((SECONDS - t)) s"
REWIRE_E2E=1 KUBECONFIG=$(hack/node.sh env | sed 's/^export KUBECONFIG=//') REWIRE_TOOLS_DIR=$tools \
  go test -count=1 -v -timeout 30m ./test/e2e/ ${E2E_RUN:+-run "$E2E_RUN"}
