#!/usr/bin/env bash
# Builds the CNI plugin the runtime executes into DIR: rewire (C,
# shim/rewire.c, static, on x86-64 without a C library: it starts in under
# a millisecond) and the Go plugin
# it leaves everything off its path to, rewire-plugin (cmd/rewire).
# Usage: hack/build-plugin.sh DIR [go build flags...]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH
dir=${1:?usage: hack/build-plugin.sh DIR [go build flags...]}
shift
mkdir -p "$dir"
cgo=0 # static; -race needs cgo
case " $* " in *" -race "*) cgo=1 ;; esac
CGO_ENABLED=$cgo go build "$@" -o "$dir/rewire-plugin" ./cmd/rewire
cflags=(-O2 -static -Wall -Wextra -Werror)
if [ "$(uname -m)" = x86_64 ]; then
	# No C library (shim/nolibc.h): nothing to initialise at start.
	cflags+=(-nostdlib -ffreestanding -fno-builtin -fno-stack-protector -fno-pie -no-pie
		-fno-asynchronous-unwind-tables -DREWIRE_NOLIBC)
fi
${CC:-cc} "${cflags[@]}" -o "$dir/rewire.tmp" shim/rewire.c
mv "$dir/rewire.tmp" "$dir/rewire"
