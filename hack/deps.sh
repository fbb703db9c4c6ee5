#!/usr/bin/env bash
# Checks that this machine has what a make target needs and installs the
# missing Debian packages (one apt-get update, then one apt-get install).
# Usage: hack/deps.sh TARGET...   TARGET: test, demo or e2e
# The list per target lives here only: the Makefile's targets and .ci/run
# call this script. Fails with a message saying what is missing and how to
# get it when it cannot install (not root, no apt-get).
set -euo pipefail
export PATH=/usr/local/go/bin:$PATH:/usr/sbin:/sbin
log() { echo "deps: $*" >&2; }
die() { log "$*"; exit 1; }

missing=() # Debian packages
why=()     # what each is for, same order

# need_cmd CMD PACKAGE WHY: PACKAGE provides CMD.
need_cmd() { command -v "$1" >/dev/null || add "$2" "$3 ($1)"; }
# need_file FILE PACKAGE WHY: PACKAGE provides FILE (headers).
need_file() { [ -e "$1" ] || add "$2" "$3 ($1)"; }
add() {
  local p
  for p in "${missing[@]}"; do [ "$p" != "$1" ] || return 0; done
  missing+=("$1")
  why+=("$2")
}
# A statically linked /bin/busybox: it runs alone in an empty image.
need_static_busybox() {
  { ldd /bin/busybox 2>&1 || true; } | grep -q "not a dynamic" || add busybox-static "$1 (a static /bin/busybox)"
}

# What each target needs. Kernel features are checked after installing.
deps_test() {
  need_cmd make make "the build"
  need_cmd gcc gcc "go test -race (cgo), the C plugin (shim/rewire.c)"
  need_file "$(gcc -print-file-name=libc.a 2>/dev/null || echo libc.a)" libc6-dev "the C plugin, linked statically"
  need_file /usr/include/stdlib.h libc6-dev "go test -race (cgo's C headers)"
  need_cmd ip iproute2 "the kernel check below"
  need_cmd iptables iptables "the portmap and bridge (ipMasq) plugins"
  need_static_busybox "tools/image's busybox image test"
}
deps_demo() {
  need_cmd make make "the build"
  need_cmd gcc gcc "the C plugin (shim/rewire.c)"
  need_file "$(gcc -print-file-name=libc.a 2>/dev/null || echo libc.a)" libc6-dev "the C plugin, linked statically"
  need_cmd ip iproute2 "the kernel check below, showing the pod's interfaces"
}
deps_e2e() {
  deps_test
  need_cmd pkg-config pkg-config "building runc"
  need_file /usr/include/seccomp.h libseccomp-dev "building runc (seccomp)"
  need_static_busybox "the end-to-end busybox image"
  need_cmd openssl openssl "the node's certificates"
}

root() { [ "$(id -u)" = 0 ]; }

install_missing() {
  [ ${#missing[@]} -gt 0 ] || return 0
  local i list=""
  for i in "${!missing[@]}"; do list+=$'\n'"  ${missing[$i]}: ${why[$i]}"; done
  if ! command -v apt-get >/dev/null; then
    die "missing (Debian package names):$list"$'\n'"no apt-get here: install their equivalents, then run again"
  fi
  if ! root; then
    die "missing (Debian package names):$list"$'\n'"run as root to have them installed, or: sudo apt-get install ${missing[*]}"
  fi
  log "installing:$list"
  apt-get update -qq || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null ||
    die "apt-get install ${missing[*]} failed"
}

# check_kernel: the links the tests and the demo make (bridge, macvlan on a
# veth, veth itself), made and removed once. Needs root and iproute2.
a=rwd-$$a br=rwd-$$br
check_kernel() {
  local m b=rwd-$$b mv=rwd-$$m
  for m in bridge macvlan veth; do modprobe "$m" 2>/dev/null || true; done
  trap 'ip link del "$a" 2>/dev/null; ip link del "$br" 2>/dev/null; true' EXIT
  ip link add "$a" type veth peer name "$b" 2>/dev/null || die "the kernel cannot make veth links (module veth)"
  ip link add "$br" type bridge 2>/dev/null || die "the kernel cannot make bridges: load the bridge module on the host (modprobe bridge)"
  ip link add "$mv" link "$a" type macvlan mode bridge 2>/dev/null ||
    die "the kernel cannot make macvlan links: load the macvlan module on the host (modprobe macvlan)"
}

[ $# -gt 0 ] || die "usage: hack/deps.sh test|demo|e2e..."
for target in "$@"; do
  case $target in
    test | demo | e2e) "deps_$target" ;;
    *) die "unknown target $target (want test, demo or e2e)" ;;
  esac
done
command -v go >/dev/null || die "no go on the PATH (nor in /usr/local/go/bin): install Go (go.mod's version) from https://go.dev/dl"
if ! root; then
  if [ "${REWIRE_SKIP_ROOT_TESTS:-}" = 1 ] && [ "$*" = test ]; then
    install_missing
    log "not root: REWIRE_SKIP_ROOT_TESTS=1, the tests that need root are skipped"
    exit 0
  fi
  hint=""
  [ "$*" != test ] || hint=" (or REWIRE_SKIP_ROOT_TESTS=1 make test: only the tests that do not need root)"
  die "make $* needs root: it creates network namespaces and links; run it as root$hint"
fi
install_missing
check_kernel
