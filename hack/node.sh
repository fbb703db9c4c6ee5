#!/usr/bin/env bash
# A real single-node Kubernetes on this machine for the end-to-end suite:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet,
# containerd and runc (hack/build-tools.sh + hack/build-node.sh), with a
# bridge + host-local primary network in /etc/cni/net.d. Runs as root.
#
#   hack/node.sh up     start everything, import bin/*-image.tar, wait for Ready
#   hack/node.sh down   stop everything and remove all it made (idempotent)
#   hack/node.sh env    print the KUBECONFIG export
#
# up writes the admin kubeconfig to $E2E_DIR/admin.kubeconfig. Processes run in
# the background; their logs are in $E2E_DIR/logs. No kube-proxy: one DNAT rule
# (tagged rewire-e2e) makes the `kubernetes` Service reachable from the host
# network, which is all rewired (a hostNetwork pod) needs.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
E2E_DIR=${E2E_DIR:-/var/lib/rewire-e2e}
RUN_DIR=/run/rewire-e2e
NODE=${E2E_NODE_NAME:-e2e-node}
API_PORT=16443
SVC_CIDR=10.96.0.0/16
SVC_IP=10.96.0.1
POD_CIDR=10.244.0.0/24
BRIDGE=rewire-e2e0
CNI_BIN=/opt/cni/bin
CNI_CONF=/etc/cni/net.d
SOCK=$RUN_DIR/containerd.sock
# Host paths the node (or Rewire's DaemonSet) creates; down removes those
# that did not exist before up (recorded in $E2E_DIR/created).
HOST_DIRS=(/var/lib/kubelet /opt/cni /etc/cni /var/lib/cni /var/lib/rewire /run/rewire
  /var/run/k8s.cni.cncf.io /var/log/pods /var/log/containers /run/containerd /var/lib/containerd)
SYSCTLS=(kernel.panic kernel.panic_on_oops vm.overcommit_memory net.ipv4.ip_forward)
log() { echo "node: $*" >&2; }
die() { log "error: $*"; exit 1; }

node_ip() { ip -4 route get 1.1.1.1 2>/dev/null | awk '{for (i = 1; i < NF; i++) if ($i == "src") {print $(i + 1); exit}}'; }

wait_for() { # wait_for SECONDS DESCRIPTION CMD...
  local deadline=$((SECONDS + $1)) what=$2
  shift 2
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || { log "timed out waiting for $what"; return 1; }
    sleep 0.2
  done
}

start() { # start NAME CMD...: a background process logging to logs/NAME.log
  local name=$1
  shift
  setsid "$@" >"$E2E_DIR/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$E2E_DIR/pids/$name"
}

pki() {
  local d=$E2E_DIR/pki ip=$1
  mkdir -p "$d"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$d/ca.key" -out "$d/ca.crt" -days 2 -subj /CN=rewire-e2e-ca 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout "$d/apiserver.key" -out "$d/apiserver.csr" -subj /CN=kube-apiserver 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,IP:%s,IP:%s,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc\n' "$ip" "$SVC_IP" >"$d/san.ext"
  openssl x509 -req -in "$d/apiserver.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial -days 2 -extfile "$d/san.ext" -out "$d/apiserver.crt" 2>/dev/null
  # The apiserver's client certificate towards the kubelet (exec, logs).
  openssl req -newkey rsa:2048 -nodes -keyout "$d/kubelet-client.key" -out "$d/kubelet-client.csr" -subj "/O=system:masters/CN=kube-apiserver-kubelet-client" 2>/dev/null
  openssl x509 -req -in "$d/kubelet-client.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial -days 2 -out "$d/kubelet-client.crt" 2>/dev/null
  openssl genrsa -out "$d/sa.key" 2048 2>/dev/null
  openssl rsa -in "$d/sa.key" -pubout -out "$d/sa.pub" 2>/dev/null
  # Static tokens: token,user,uid,"groups".
  {
    echo "admin-$RANDOM$RANDOM,admin,admin,\"system:masters\""
    echo "kubelet-$RANDOM$RANDOM,system:node:$NODE,kubelet,\"system:nodes\""
    echo "kcm-$RANDOM$RANDOM,system:kube-controller-manager,kcm,\"system:masters\""
    echo "sched-$RANDOM$RANDOM,system:kube-scheduler,sched,\"system:masters\""
  } >"$d/tokens.csv"
  chmod 600 "$d"/*.key "$d/tokens.csv"
}

kubeconfig() { # kubeconfig USER-PREFIX FILE
  local ip=$1 who=$2 file=$3 token
  token=$(awk -F, -v p="$who-" 'index($1, p) == 1 {print $1}' "$E2E_DIR/pki/tokens.csv")
  cat >"$file" <<KC
apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster: {server: "https://$ip:$API_PORT", certificate-authority: "$E2E_DIR/pki/ca.crt"}
users:
- name: $who
  user: {token: "$token"}
contexts:
- name: e2e
  context: {cluster: e2e, user: $who}
current-context: e2e
KC
  chmod 600 "$file"
}

up() {
  [ "$(id -u)" = 0 ] || die "run as root"
  if [ -e "$E2E_DIR/created" ]; then die "a node is already up (or was not torn down): run hack/node.sh down first"; fi
  local t0=$SECONDS tools nodebin ip
  tools=$("$root/hack/build-tools.sh" | tail -1)
  nodebin=$("$root/hack/build-node.sh" | tail -1)
  for img in rewire pause busybox; do
    [ -f "$root/bin/$img-image.tar" ] || die "bin/$img-image.tar missing: run make image e2e-images"
  done
  ip=$(node_ip)
  [ -n "$ip" ] || die "no IPv4 source address for a default route (the node IP)"
  for d in /etc/cni/net.d /opt/cni/bin; do
    [ -z "$(ls -A "$d" 2>/dev/null)" ] || die "$d is not empty: this script would overwrite a real CNI set-up"
  done
  mkdir -p "$E2E_DIR"/{logs,pids} "$RUN_DIR"
  : >"$E2E_DIR/created"
  for d in "${HOST_DIRS[@]}"; do [ -e "$d" ] || echo "$d" >>"$E2E_DIR/created"; done
  for s in "${SYSCTLS[@]}"; do echo "$s=$(sysctl -n "$s")"; done >"$E2E_DIR/sysctl.saved"
  echo "$tools" >"$E2E_DIR/tools"
  firewall_state
  echo "$nodebin" >"$E2E_DIR/nodebin"
  export PATH=$nodebin:$tools:$PATH

  modprobe overlay 2>/dev/null || true
  modprobe macvlan 2>/dev/null || true
  sysctl -qw net.ipv4.ip_forward=1

  log "pki, configs"
  pki "$ip"
  kubeconfig "$ip" admin "$E2E_DIR/admin.kubeconfig"
  kubeconfig "$ip" kubelet "$E2E_DIR/kubelet.kubeconfig"
  kubeconfig "$ip" kcm "$E2E_DIR/kcm.kubeconfig"
  kubeconfig "$ip" sched "$E2E_DIR/sched.kubeconfig"

  mkdir -p "$CNI_BIN" "$CNI_CONF"
  cp "$tools"/{bridge,host-local,loopback,macvlan,portmap,static,tuning,bandwidth,ptp} "$CNI_BIN/"
  cat >"$CNI_CONF/10-bridge.conflist" <<CNI
{
  "cniVersion": "1.0.0",
  "name": "e2e-bridge",
  "plugins": [
    {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": true, "capabilities": {"ips": true},
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
CNI

  cat >"$E2E_DIR/containerd.toml" <<TOML
version = 3
root = "$E2E_DIR/containerd"
state = "$RUN_DIR/containerd"
[grpc]
  address = "$SOCK"
[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "registry.k8s.io/pause:3.10"
[plugins.'io.containerd.cri.v1.runtime']
  disable_apparmor = true
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "$nodebin/runc"
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["$CNI_BIN"]
    conf_dir = "$CNI_CONF"
TOML

  cat >"$E2E_DIR/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$SOCK
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: "$E2E_DIR/pki/ca.crt"}
authorization: {mode: Webhook}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
failSwapOn: false
podLogsDir: $E2E_DIR/pod-logs
resolvConf: /etc/resolv.conf
nodeStatusUpdateFrequency: 4s
nodeStatusReportFrequency: 10s
syncFrequency: 10s
fileCheckFrequency: 10s
runtimeRequestTimeout: 1m
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
maxPods: 200
serializeImagePulls: false
YAML

  local t
  log "etcd"
  start etcd etcd --name e2e --data-dir "$E2E_DIR/etcd" --unsafe-no-fsync \
    --listen-client-urls http://127.0.0.1:12379 --advertise-client-urls http://127.0.0.1:12379 \
    --listen-peer-urls http://127.0.0.1:12380 --log-level error
  log "kube-apiserver"
  start kube-apiserver kube-apiserver --etcd-servers http://127.0.0.1:12379 \
    --bind-address "$ip" --advertise-address "$ip" --secure-port $API_PORT \
    --tls-cert-file "$E2E_DIR/pki/apiserver.crt" --tls-private-key-file "$E2E_DIR/pki/apiserver.key" \
    --client-ca-file "$E2E_DIR/pki/ca.crt" --token-auth-file "$E2E_DIR/pki/tokens.csv" \
    --kubelet-client-certificate "$E2E_DIR/pki/kubelet-client.crt" --kubelet-client-key "$E2E_DIR/pki/kubelet-client.key" \
    --service-account-issuer https://kubernetes.default.svc --service-account-key-file "$E2E_DIR/pki/sa.pub" \
    --service-account-signing-key-file "$E2E_DIR/pki/sa.key" \
    --authorization-mode Node,RBAC --service-cluster-ip-range $SVC_CIDR --allow-privileged=true \
    --kubelet-preferred-address-types InternalIP --enable-priority-and-fairness=false --v 1
  # Mounts propagate as on a systemd host (/ shared): the DaemonSet mounts
  # the runtime's socket directory with HostToContainer propagation, which
  # a private / refuses ("not a shared or slave mount").
  [ "$(findmnt -no PROPAGATION /)" = shared ] || mount --make-rshared /
  log "containerd"
  start containerd containerd --config "$E2E_DIR/containerd.toml"
  wait_for 60 "kube-apiserver" kubectl --kubeconfig "$E2E_DIR/admin.kubeconfig" get --raw /readyz ||
    { tail -20 "$E2E_DIR/logs/kube-apiserver.log" >&2; exit 1; }
  log "kube-apiserver ready after $((SECONDS - t0)) s"
  wait_for 30 "containerd" ctr --address "$SOCK" version || { tail -20 "$E2E_DIR/logs/containerd.log" >&2; exit 1; }
  for img in pause busybox rewire rewire-next; do
    ctr --address "$SOCK" -n k8s.io images import --no-unpack=false "$root/bin/$img-image.tar" >/dev/null
  done
  log "images imported: $(ctr --address "$SOCK" -n k8s.io images ls -q | grep -v '^sha256' | tr '\n' ' ')"
  # Stands in for kube-proxy for the one Service rewired uses (in-cluster config).
  iptables -t nat -A OUTPUT -d $SVC_IP/32 -p tcp --dport 443 -m comment --comment rewire-e2e \
    -j DNAT --to-destination "$ip:$API_PORT"

  log "kube-controller-manager, kube-scheduler"
  start kube-controller-manager kube-controller-manager --kubeconfig "$E2E_DIR/kcm.kubeconfig" \
    --authentication-kubeconfig "$E2E_DIR/kcm.kubeconfig" --authorization-kubeconfig "$E2E_DIR/kcm.kubeconfig" \
    --bind-address 127.0.0.1 --leader-elect=false --root-ca-file "$E2E_DIR/pki/ca.crt" \
    --service-account-private-key-file "$E2E_DIR/pki/sa.key" --service-cluster-ip-range $SVC_CIDR \
    --controllers '*,-nodeipam' --v 1
  start kube-scheduler kube-scheduler --kubeconfig "$E2E_DIR/sched.kubeconfig" \
    --authentication-kubeconfig "$E2E_DIR/sched.kubeconfig" --authorization-kubeconfig "$E2E_DIR/sched.kubeconfig" \
    --bind-address 127.0.0.1 --leader-elect=false --v 1
  log "kubelet"
  t=$SECONDS
  start kubelet kubelet --config "$E2E_DIR/kubelet.yaml" --kubeconfig "$E2E_DIR/kubelet.kubeconfig" \
    --hostname-override "$NODE" --node-ip "$ip" --cert-dir "$E2E_DIR/kubelet-pki" --v 1
  local k=(kubectl --kubeconfig "$E2E_DIR/admin.kubeconfig")
  wait_for 120 "node $NODE Ready" sh -c "$(printf '%q ' "${k[@]}") get node $NODE -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -qx True" ||
    { tail -30 "$E2E_DIR/logs/kubelet.log" >&2; exit 1; }
  log "node Ready $((SECONDS - t)) s after kubelet start"
  wait_for 60 "the default ServiceAccount" "${k[@]}" -n default get serviceaccount default
  log "up in $((SECONDS - t0)) s; export KUBECONFIG=$E2E_DIR/admin.kubeconfig"
}

# firewall_state records the iptables chains and nftables tables that exist
# before up; firewall_cleanup removes the KUBE-* and CNI-* chains made since
# (the kubelet's and the CNI plugins'), every rule jumping to them, the
# rewire-e2e DNAT rule, and the nftables tables made since (iptables-nft).
firewall_state() {
  local cmd tbl
  for cmd in iptables ip6tables; do
    command -v $cmd-save >/dev/null || continue
    for tbl in filter nat mangle; do
      $cmd-save -t $tbl 2>/dev/null | awk -v c=$cmd -v t=$tbl '/^:/ {print c, t, substr($1, 2)}' || true
    done
  done >"$E2E_DIR/chains.before"
  if command -v nft >/dev/null; then
    nft list tables 2>/dev/null >"$E2E_DIR/tables.before" || true
    nft_chains >"$E2E_DIR/nftchains.before"
  fi
}

# nft_chains prints "FAMILY TABLE CHAIN" for every nftables chain.
nft_chains() {
  nft list ruleset 2>/dev/null | awk '$1 == "table" {f = $2; t = $3} $1 == "chain" {print f, t, $2}' || true
}

firewall_cleanup() {
  [ -f "$E2E_DIR/chains.before" ] || return 0
  local cmd tbl ch new rule
  for cmd in iptables ip6tables; do
    command -v $cmd-save >/dev/null || continue
    for tbl in filter nat mangle; do
      new=()
      for ch in $($cmd-save -t $tbl 2>/dev/null | awk '/^:(KUBE-|CNI-)/ {print substr($1, 2)}' || true); do
        grep -qx "$cmd $tbl $ch" "$E2E_DIR/chains.before" || new+=("$ch")
      done
      $cmd-save -t $tbl 2>/dev/null | grep -E '^-A ' | while read -r rule; do
        local drop=0 c
        case "$rule" in *rewire-e2e*) drop=1 ;; esac
        for c in "${new[@]}"; do
          case "$rule" in "-A $c "*) drop=0; continue 2 ;; *" -j $c"|*" -j $c "*|*" -g $c"|*" -g $c "*) drop=1 ;; esac
        done
        [ $drop = 1 ] && eval "$cmd -t $tbl ${rule/#-A /-D }" 2>/dev/null
        true
      done || true
      for ch in "${new[@]}"; do $cmd -t $tbl -F "$ch" 2>/dev/null || true; done
      for ch in "${new[@]}"; do $cmd -t $tbl -X "$ch" 2>/dev/null || true; done
    done
  done
  if command -v nft >/dev/null && [ -f "$E2E_DIR/tables.before" ]; then
    nft list tables 2>/dev/null | while read -r t; do
      grep -qxF "$t" "$E2E_DIR/tables.before" || nft delete $t 2>/dev/null || true
    done || true
    # Base chains iptables-nft made in tables that were there (emptied above).
    nft_chains | while read -r f t c; do
      grep -qxF "$f $t $c" "$E2E_DIR/nftchains.before" || nft delete chain "$f" "$t" "$c" 2>/dev/null || true
    done || true
  fi
}

stop_proc() { # stop_proc NAME...: SIGTERM to all, SIGKILL to those still running after 10 s
  local n pid pids=()
  for n in "$@"; do
    [ -f "$E2E_DIR/pids/$n" ] || continue
    pid=$(cat "$E2E_DIR/pids/$n")
    kill -TERM "$pid" 2>/dev/null && pids+=("$n:$pid")
    rm -f "$E2E_DIR/pids/$n"
  done
  for _ in $(seq 50); do
    local alive=0 p
    for p in "${pids[@]}"; do kill -0 "${p#*:}" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && return 0
    sleep 0.2
  done
  for p in "${pids[@]}"; do
    kill -KILL "${p#*:}" 2>/dev/null && log "${p%%:*} killed: still running 10 s after SIGTERM"
  done
  true
}

down() {
  [ "$(id -u)" = 0 ] || die "run as root"
  local t0=$SECONDS nodebin=""
  if [ ! -e "$E2E_DIR" ] && [ ! -e "$RUN_DIR" ]; then
    log "no node here ($E2E_DIR): nothing to do"
    return 0
  fi
  [ -f "$E2E_DIR/nodebin" ] && nodebin=$(cat "$E2E_DIR/nodebin")
  # Pods first, through the CRI, while containerd (and rewired) still run:
  # their network teardown goes through the CNI as on a real node.
  stop_proc kubelet
  if [ -n "$nodebin" ] && [ -S "$SOCK" ] && "$nodebin/crictl" -r "unix://$SOCK" info >/dev/null 2>&1; then
    local crictl=("$nodebin/crictl" -r "unix://$SOCK" -t 30s) rw
    rw=$("${crictl[@]}" pods -q --label app=rewire 2>/dev/null | tr "\n" " " || true)
    for p in $("${crictl[@]}" pods -q 2>/dev/null); do
      case " $rw " in *" $p "*) continue ;; esac
      "${crictl[@]}" stopp "$p" >/dev/null 2>&1 || true
      "${crictl[@]}" rmp -f "$p" >/dev/null 2>&1 || true
    done
    for p in $rw; do
      "${crictl[@]}" stopp "$p" >/dev/null 2>&1 || true
      "${crictl[@]}" rmp -f "$p" >/dev/null 2>&1 || true
    done
  fi
  log "pods removed ($((SECONDS - t0)) s)"
  stop_proc kube-scheduler kube-controller-manager containerd kube-apiserver
  stop_proc etcd
  log "processes stopped ($((SECONDS - t0)) s)"
  # Shims and anything left in the pods' cgroups.
  for pid in $(ls /proc | grep -E '^[0-9]+$'); do
    exe=$(readlink "/proc/$pid/exe" 2>/dev/null || true)
    if [ -n "$nodebin" ] && [ "$exe" = "$nodebin/containerd-shim-runc-v2" ]; then kill -KILL "$pid" 2>/dev/null || true; fi
  done
  for c in /sys/fs/cgroup/*/kubepods; do
    [ -d "$c" ] || continue
    find "$c" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
  done
  sleep 0.5
  for c in /sys/fs/cgroup/*/kubepods; do
    [ -d "$c" ] || continue
    find "$c" -depth -type d -exec rmdir {} + 2>/dev/null || true
    [ -d "$c" ] && log "warning: cgroup $c still exists"
  done
  log "cgroups removed ($((SECONDS - t0)) s)"
  # Mounts under the node's directories, deepest first.
  local m
  for _ in 1 2 3; do
    m=$(awk '{print $5}' /proc/self/mountinfo | grep -E "^($E2E_DIR|$RUN_DIR|/var/lib/kubelet|/run/netns/cni-|/var/run/netns/cni-|/run/containerd|/var/lib/containerd)" | sort -r || true)
    [ -z "$m" ] && break
    for p in $m; do umount "$p" 2>/dev/null || umount -l "$p" 2>/dev/null || true; done
  done
  rm -f /run/netns/cni-* 2>/dev/null || true
  # Links: the bridge, its leftover veths, and hosts links the suite made (rwe2e*).
  ip link del "$BRIDGE" 2>/dev/null || true
  for l in $(ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 | grep -E '^rwe2e' || true); do ip link del "$l" 2>/dev/null || true; done
  firewall_cleanup
  if [ -f "$E2E_DIR/sysctl.saved" ]; then
    while IFS= read -r kv; do sysctl -qw "$kv" || true; done <"$E2E_DIR/sysctl.saved"
  fi
  if [ -f "$E2E_DIR/created" ]; then
    while IFS= read -r d; do rm -rf "$d"; done <"$E2E_DIR/created"
  fi
  # up found these empty (it refuses otherwise): the bridge config, Rewire's
  # config and plugin, the reference plugins.
  if [ -f "$E2E_DIR/created" ]; then rm -rf "${CNI_CONF:?}"/* "${CNI_BIN:?}"/* 2>/dev/null || true; fi
  rm -rf "$E2E_DIR" "$RUN_DIR"
  log "down in $((SECONDS - t0)) s"
}

case "${1:-}" in
up) up ;;
down) down ;;
env) echo "export KUBECONFIG=$E2E_DIR/admin.kubeconfig" ;;
*) die "usage: $0 up|down|env" ;;
esac
