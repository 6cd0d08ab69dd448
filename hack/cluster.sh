#!/usr/bin/env bash
# Start, stop or describe the local test cluster: a real etcd, kube-apiserver,
# kube-controller-manager and kube-scheduler run as local processes by kwokctl,
# with kwok simulating nodes and pods. Binaries come from `make tools`.
#
#   hack/cluster.sh up      idempotent; writes .cluster/kubeconfig
#   hack/cluster.sh down    idempotent; stops every process of the cluster
#   hack/cluster.sh status  exits 0 when the API server is ready
#
# TASKMASTER_CLUSTER_NAME and TASKMASTER_CLUSTER_STATE (default .cluster) run
# a second cluster beside the first: the benchmark's own.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin=$root/.tools/bin
state=${TASKMASTER_CLUSTER_STATE:-$root/.cluster}
name=${TASKMASTER_CLUSTER_NAME:-taskmaster}
kubeconfig=$state/kubeconfig
# kwokctl keeps each cluster's certificates, logs and pid files here.
export KWOK_WORKDIR=$state/kwok
clusterdir=$KWOK_WORKDIR/clusters/$name

kwokctl() { "$bin/kwokctl" --name "$name" "$@"; }
kubectl() { "$bin/kubectl" --kubeconfig "$kubeconfig" "$@"; }

ready() {
  [[ -f $kubeconfig ]] && kubectl get --raw /readyz >/dev/null 2>&1
}

# The real node (hack/node.py) runs beside kwok's wherever it can, for the
# default cluster only: TASKMASTER_REAL_NODE=off goes without it.
real_node=off
if [[ -z ${TASKMASTER_CLUSTER_NAME:-} ]] && python3 "$root/hack/node.py" check >/dev/null; then
  real_node=on
fi

cluster_pids() {
  cat "$clusterdir"/pids/*.pid 2>/dev/null || true
}

up() {
  if ready; then
    echo "cluster '$name' is already up (kubeconfig: $kubeconfig)"
    if [[ $real_node == on ]]; then
      python3 "$root/hack/node.py" up
    fi
    return
  fi
  for tool in etcd kube-apiserver kube-controller-manager kube-scheduler kwok kwokctl kubectl; do
    [[ -x $bin/$tool ]] || { echo "missing $bin/$tool: run 'make tools'" >&2; exit 1; }
  done
  if [[ -d $clusterdir ]]; then
    # Left over from a stopped or crashed run: start from scratch.
    down
  fi
  mkdir -p "$state"
  local started=$SECONDS log=$state/kwokctl.log
  echo "starting cluster '$name' (log: $log)"
  local node_patch=""
  if [[ $real_node == on ]]; then
    node_patch=$(python3 "$root/hack/node.py" apiserver-patch)
  fi
  # Pods' logs come from one file, named by an absolute path.
  {
    awk -v patch="$node_patch" '{ print } /^componentsPatches:$/ && patch != "" { printf "%s\n", patch }' \
      "$root/hack/kwok/kwokctl.yaml"
    printf -- '---\napiVersion: kwok.x-k8s.io/v1alpha1\nkind: ClusterLogs\n'
    printf 'metadata:\n  name: container-log\nspec:\n  logs:\n  - logsFile: %s\n' \
      "$root/hack/kwok/container.log"
  } >"$state/kwokctl.yaml"
  if ! kwokctl create cluster \
    --config "$state/kwokctl.yaml" \
    --kube-audit-policy "$root/hack/kwok/audit-policy.yaml" \
    --kubeconfig "$kubeconfig" \
    --etcd-binary "$bin/etcd" \
    --kube-apiserver-binary "$bin/kube-apiserver" \
    --kube-controller-manager-binary "$bin/kube-controller-manager" \
    --kube-scheduler-binary "$bin/kube-scheduler" \
    --kwok-controller-binary "$bin/kwok" \
    --wait 120s >"$log" 2>&1; then
    cat "$log" >&2
    exit 1
  fi
  kubectl apply -f "$root/hack/kwok/nodes.yaml" >/dev/null
  kubectl wait --for=condition=Ready node --all --timeout=60s >/dev/null
  # Pods need the namespace's default ServiceAccount, which the controller
  # manager creates shortly after start.
  kubectl wait --for=create serviceaccount/default -n default --timeout=60s >/dev/null
  if [[ $real_node == on ]]; then
    python3 "$root/hack/node.py" up
  fi
  echo "cluster '$name' is up in $((SECONDS - started))s (kubeconfig: $kubeconfig)"
}

down() {
  local pids
  # The real node first: its pods are stopped through the API server. The
  # control plane stops even when that fails.
  python3 "$root/hack/node.py" down || echo "stopping the real node failed (see above)" >&2
  pids=$(cluster_pids)
  if [[ -d $clusterdir ]]; then
    kwokctl delete cluster --kubeconfig "$kubeconfig" >/dev/null 2>&1 || true
  fi
  # Whatever kwokctl failed to stop is still ours: end it by pid.
  for pid in $pids; do
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
    fi
  done
  for pid in $pids; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  rm -rf "$clusterdir" "$kubeconfig"
  echo "cluster '$name' is down"
}

status() {
  if ready; then
    kubectl version
    exit 0
  fi
  echo "cluster '$name' is not running" >&2
  exit 1
}

case ${1:-} in
  up | down | status) "$1" ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
