#!/usr/bin/env bash
# Runs a long build quietly for make demo, with a progress line: the
# command's stdout passes through untouched; on its stderr the go tool's
# per-module "go: downloading ..." lines are counted instead of shown, a
# "build-tools: WHAT" line (hack/build-tools.sh's log) is shown and becomes
# what is being built, other lines are shown; and every 20 s while the
# command runs a line says what is being built and for how long:
#   demo: building kube-apiserver (elapsed 2m10s, 412 modules downloaded)
# A command that finishes within 20 s (everything cached) prints nothing.
# Usage: hack/progress.sh WHAT COMMAND [ARG...]   (exit status: COMMAND's)
set -uo pipefail
what=$1
shift
state=$(mktemp -d)
echo "$what" >"$state/what"
: >"$state/downloads"
start=$SECONDS

elapsed() {
  local s=$((SECONDS - start))
  if [ "$s" -ge 60 ]; then printf '%dm%02ds' $((s / 60)) $((s % 60)); else printf '%ds' "$s"; fi
}

(
  while sleep 20; do
    n=$(wc -l <"$state/downloads")
    extra=""
    [ "$n" -gt 0 ] && extra=", $n modules downloaded"
    echo "demo: building $(cat "$state/what") (elapsed $(elapsed)$extra)"
  done
) >&2 & # not on stdout: a caller reading it ($(...)) would wait for the ticker's sleep
ticker=$!
trap 'kill $ticker 2>/dev/null; wait $ticker 2>/dev/null; rm -rf "$state"' EXIT

# stderr into the filter, stdout straight through (fd 3).
{ "$@" 2>&1 1>&3 3>&- | while IFS= read -r line; do
  case $line in
    "go: downloading "*) echo >>"$state/downloads" ;;
    "build-tools: done in "*) echo "demo: test tools built in $(elapsed), cached for the next runs" >&2 ;;
    "build-tools: "*)
      now=${line#build-tools: }
      [ -e "$state/building" ] || echo "demo: building the test tools missing from the cache (first run only; cached afterwards)" >&2
      touch "$state/building"
      echo "${now%% (*}" >"$state/what"
      echo "demo: building $now" >&2
      ;;
    *) echo "$line" >&2 ;;
  esac
done; } 3>&1
