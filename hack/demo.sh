#!/usr/bin/env bash
# `make demo`: the operator on the local cluster with the examples, and a live
# view of their runs. Ctrl-C (or DEMO_SECONDS elapsing) stops what it started:
# the operator, the demo's tasks, and the cluster if the demo brought it up.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export KUBECONFIG=$root/.cluster/kubeconfig
kubectl=(.tools/bin/kubectl)
namespace=taskmaster-demo
log=.cluster/demo-operator.log
seconds=${DEMO_SECONDS:-0}
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

started_cluster=false
if ! hack/cluster.sh status >/dev/null 2>&1; then
  # The demo's pods are simulated: the real node (and its images) is not needed.
  TASKMASTER_REAL_NODE=off hack/cluster.sh up
  started_cluster=true
fi

operator_pid=
cleanup() {
  trap - EXIT INT TERM
  step "Stopping"
  [[ -n $operator_pid ]] && kill "$operator_pid" 2>/dev/null && wait "$operator_pid" 2>/dev/null || true
  "${kubectl[@]}" delete namespace "$namespace" --wait=false >/dev/null 2>&1 || true
  if $started_cluster; then hack/cluster.sh down; else echo "The cluster stays up: 'make cluster-down' stops it."; fi
}
trap cleanup EXIT INT TERM

step "The ScheduledTask CRD"
"${kubectl[@]}" apply --server-side -f crds/ >/dev/null
"${kubectl[@]}" wait --for condition=established crd/scheduledtasks.taskmaster.dev >/dev/null
# A previous demo's namespace may still be on its way out.
"${kubectl[@]}" wait --for=delete "namespace/$namespace" --timeout=120s >/dev/null 2>&1 || true
"${kubectl[@]}" create namespace "$namespace" >/dev/null

step "The operator (log: $log)"
.venv/bin/taskmaster-operator --namespace "$namespace" --lease-namespace "$namespace" \
  --bind-address 127.0.0.1 --metrics-port 18080 --health-port 18081 >"$log" 2>&1 &
operator_pid=$!
for _ in $(seq 100); do
  curl -sf http://127.0.0.1:18081/readyz >/dev/null 2>&1 && break
  kill -0 "$operator_pid" 2>/dev/null || { cat "$log"; exit 1; }
  sleep 0.2
done
echo "ready; metrics at http://127.0.0.1:18080/metrics"

step "The examples"
run_at=$(date -u -d '+15 seconds' +%Y-%m-%dT%H:%M:%SZ)
for example in examples/*.yaml; do
  sed "s/2030-01-01T09:00:00Z/$run_at/" "$example" | "${kubectl[@]}" apply -n "$namespace" -f -
done

step "Live view (Ctrl-C to stop)"
started=$SECONDS
while (( seconds == 0 || SECONDS - started < seconds )); do
  view=$("${kubectl[@]}" get st -n "$namespace" -o wide 2>&1
         echo
         "${kubectl[@]}" get jobs -n "$namespace" --sort-by=.metadata.creationTimestamp 2>&1 | tail -n 8
         echo
         "${kubectl[@]}" get events -n "$namespace" --field-selector reportingComponent=taskmaster.dev/operator \
           --sort-by=.metadata.creationTimestamp -o custom-columns=TYPE:.type,REASON:.reason,TASK:.involvedObject.name,MESSAGE:.message 2>&1 | tail -n 6)
  if [[ -t 1 ]]; then clear; fi
  printf '%s  (%ss)\n\n%s\n' "$(date -u +%H:%M:%S)" "$((SECONDS - started))" "$view"
  sleep 2
done
