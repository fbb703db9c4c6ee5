# Rewire — see README.md. All targets run as root on Linux.
GO ?= go
export PATH := /usr/local/go/bin:$(PATH)
TOOLS = $(shell hack/build-tools.sh)
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS = -s -w -X github.com/rewire-cni/rewire/pkg/version.Version=$(VERSION)

.PHONY: all build image e2e-images e2e node-up node-down tools deps-test deps-demo deps-e2e test race unit integration cluster bench fuzz soak demo fmt vet clean dist

# go test's own default (10 min) is too close to what the integration
# package takes on a loaded 2-core machine (about 4 min idle).
TEST_TIMEOUT ?= 40m

all: build

build:
	CGO_ENABLED=0 $(GO) build -ldflags '$(LDFLAGS)' -o bin/ ./cmd/rewired ./cmd/kubectl-rewire
	hack/build-plugin.sh bin -ldflags '$(LDFLAGS)'

# The container image as a tarball, built without Docker (tools/image):
# ctr -n k8s.io images import bin/rewire-image.tar, or push it with crane.
# It carries this machine's iptables (hack/iptables-files.sh) for the bridge
# (ipMasq) and portmap delegates.
IMAGE ?= rewire:dev
IMAGE_TAR ?= rewire-image.tar
image: build
	cd tools && $(GO) run ./image -bin ../bin -tag $(IMAGE) -o ../bin/$(IMAGE_TAR) \
		$$(../hack/iptables-files.sh | sed 's/^/-host-file /')

# The end-to-end node's other images (it has no registry): pause and busybox
# (Debian busybox-static).
e2e-images:
	# An upgrade target: the same code built as another version and tag.
	$(MAKE) image IMAGE=rewire:next IMAGE_TAR=rewire-next-image.tar VERSION=next-$(VERSION)
	$(MAKE) build
	cd tools && CGO_ENABLED=0 $(GO) build -ldflags '$(LDFLAGS)' -o ../bin/pause ./pause
	cd tools && $(GO) run ./image -kind pause -bin ../bin -o ../bin/pause-image.tar
	cd tools && $(GO) run ./image -kind busybox -busybox /bin/busybox -o ../bin/busybox-image.tar

# etcd, kube-apiserver, kubectl and the reference CNI plugins, cached by hash.
tools:
	@hack/build-tools.sh

# What this machine needs for test, demo and e2e (packages, kernel links,
# root): missing Debian packages are installed (hack/deps.sh holds the lists).
deps-test deps-demo deps-e2e:
	@hack/deps.sh $(@:deps-%=%)

# Unit and integration tests (real netns, real plugins, real kube-apiserver).
# The cluster package runs after the others, not beside the integration
# package: two suites of real daemons on two cores would starve each other.
# It runs without -race: its process is ~90 probers at 250 Hz (the harness is
# race-tested by the integration package), and the detector's overhead
# there stalled them on two cores; its daemons are built as shipped.
test: deps-test vet
	REWIRE_TOOLS_DIR=$(TOOLS) $(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) $$($(GO) list ./... | grep -v /test/cluster)
	REWIRE_TOOLS_DIR=$(TOOLS) $(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./test/cluster/
	cd tools && $(GO) test -count=1 ./image/

# The soak and hot-plug tests with rewired itself built with -race (a data
# race in the daemon fails the test; about 2 minutes).
race: deps-test
	REWIRE_TOOLS_DIR=$(TOOLS) REWIRE_RACE=1 $(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) -run 'TestSoak|TestHotplugAddRemoveSwap|TestGC|^TestSwitch$$' ./test/integration/

unit: deps-test
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) $$($(GO) list ./... | grep -v /test/)

integration: deps-test
	REWIRE_TOOLS_DIR=$(TOOLS) $(GO) test -count=1 -timeout $(TEST_TIMEOUT) -v ./test/integration/

# The multi-node cluster on real flannel (3 simulated nodes, flanneld vxlan
# and host-gw, rewired on each): migrate, undo, finish (about 2 minutes;
# also part of make test). CLUSTER_LOGS=/dir keeps every daemon's log.
cluster: deps-test
	REWIRE_TOOLS_DIR=$(TOOLS) $(GO) test -count=1 -timeout $(TEST_TIMEOUT) -v ./test/cluster/

# Benchmarks that print figures (ADD overhead vs direct delegates, API calls).
bench: deps-test
	REWIRE_TOOLS_DIR=$(TOOLS) $(GO) test -count=1 -timeout $(TEST_TIMEOUT) -run '^$$' -bench . -benchtime 1x ./test/integration/

# The larger soak: 2500 random operations with daemon kills (SEED=n to replay).
SEED ?= 0
soak: deps-test
	REWIRE_TOOLS_DIR=$(TOOLS) $(GO) test -count=1 -timeout 120m -v -run '^TestSoak$$' ./test/integration/ -soak-ops 2500 -soak-seed $(SEED)

# Each fuzz target for FUZZTIME (corpora in pkg/*/testdata/fuzz).
FUZZTIME ?= 10s
fuzz:
	hack/fuzz.sh ./pkg/selection/ FuzzParseNetworks $(FUZZTIME)
	hack/fuzz.sh ./pkg/nad/ FuzzConfList $(FUZZTIME)
	hack/fuzz.sh ./pkg/daemon/ FuzzHandle $(FUZZTIME)

# The local demo (test/demo): etcd + kube-apiserver + rewired, the seed's
# macvlan-conf NAD and samplepod added as a runtime would, then a hot-plug, an
# unplug and a live switch of the running pod's primary network under a
# probe, the DEL and a leak check. The first run builds the test tools and
# the demo with a progress line (hack/progress.sh) instead of the go tool's
# download lines.
demo: deps-demo
	@tools=$$(hack/progress.sh "the test tools" hack/build-tools.sh) && tools=$$(echo "$$tools" | tail -n1) && \
	  dir=$$(mktemp -d) && trap 'rm -rf "$$dir"' EXIT && \
	  hack/progress.sh "the demo, rewire and rewired" sh -c "$(GO) build -o '$$dir/' ./test/demo ./cmd/rewired && hack/build-plugin.sh '$$dir'" && \
	  REWIRE_TOOLS_DIR=$$tools "$$dir/demo"

# The end-to-end suite on a real single node (kubelet, containerd, runc,
# etcd, kube-apiserver, controller-manager, scheduler; hack/node.sh), with
# Rewire installed by kubectl apply -k deploy/. The node is torn down at the
# end. First run builds the node's parts (hack/build-node.sh, cached).
# E2E_RUN=regexp runs some scenarios only.
e2e: deps-e2e image e2e-images
	hack/e2e.sh

# The node alone, for poking at by hand (KUBECONFIG: hack/node.sh env).
node-up: deps-e2e image e2e-images
	hack/node.sh up
node-down:
	hack/node.sh down

# Release archives of kubectl-rewire (linux and darwin, amd64 and arm64;
# LICENSE inside), dist/checksums.txt and the krew manifest
# dist/plugins/rewire.yaml, validated with krew's own tools
# (tools/krewcheck). VERSION=vX.Y.Z (semver; default from git),
# DIST_URI_BASE= where the archives will be served (default: the GitHub
# release). See hack/dist.sh.
dist:
	hack/dist.sh

fmt:
	gofmt -l -w cmd pkg test

vet:
	@test -z "$$(gofmt -l cmd pkg test)" || (gofmt -l cmd pkg test; echo "gofmt needed"; exit 1)
	$(GO) vet ./...

clean:
	rm -rf bin
