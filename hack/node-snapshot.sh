#!/usr/bin/env bash
# Prints the host state a node must leave as it found it (links, netns, mounts,
# iptables and nftables rules, cgroups, sysctls, files): run it before
# `hack/node.sh up` and after `hack/node.sh down` and diff the two.
ip -o link show | awk -F': ' '{print "link", $2}' | cut -d@ -f1
ip netns list 2>/dev/null | sed 's/^/netns /'
awk '{print "mount", $5, $9}' /proc/self/mountinfo | sort
iptables-save 2>/dev/null | grep -vE '^#|^:.*\[[0-9]+:[0-9]+\]$' | sed 's/^/iptables /'
iptables-save 2>/dev/null | grep -E '^:' | awk '{print "iptables chain", $1}'
ip6tables-save 2>/dev/null | grep -vE '^#' | sed 's/\[[0-9]*:[0-9]*\]//' | sed 's/^/ip6tables /'
nft list ruleset 2>/dev/null | sed "s/counter packets [0-9]* bytes [0-9]*/counter/" | sed 's/^/nft /'
for c in /sys/fs/cgroup/*/; do find "$c" -maxdepth 1 -type d | sed 's/^/cgroup /'; done
sysctl kernel.panic kernel.panic_on_oops vm.overcommit_memory net.ipv4.ip_forward | sed 's/^/sysctl /'
for d in /var/lib/kubelet /opt/cni /etc/cni /var/lib/cni /var/lib/rewire /run/rewire /var/run/k8s.cni.cncf.io \
  /var/log/pods /var/log/containers /run/containerd /var/lib/containerd /var/lib/rewire-e2e /run/rewire-e2e; do
  [ -e "$d" ] && echo "file $d"
done
ps -eo args= | grep -E 'rewire-e2e|rewire-tools/node-|^/rewired |^/pause' | grep -v grep | cut -c1-100 | sed 's/^/process /'
true
