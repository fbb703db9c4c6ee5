#!/usr/bin/env bash
# Prints the host files that give Rewire's image a working iptables (the
# bridge plugin's ipMasq and the portmap plugin exec it inside the rewired
# container): the iptables commands with their symlink chains (the same
# backend as the host's), the shared libraries they load, and the xtables
# extensions. Prints nothing when iptables is not installed.
set -euo pipefail
command -v iptables >/dev/null || exit 0
cmds=()
for c in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
  p=$(command -v "$c" 2>/dev/null) && cmds+=("$p")
done
printf '%s\n' "${cmds[@]}"
real=$(for c in "${cmds[@]}"; do readlink -f "$c"; done | sort -u)
libdir=$(dirname "$(ldd "$(readlink -f "$(command -v iptables)")" | awk '/libxtables/ {print $3}')")
{
  for b in $real "$libdir"/xtables/*.so; do ldd "$b" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'; done
} | sort -u
[ -d "$libdir/xtables" ] && readlink -f "$libdir/xtables"   # the path libxtables was built with
