#!/usr/bin/env bash
# `make demo`: shows the local cluster at work. It runs with KUBECONFIG and
# PATH pointing at the local cluster and its tools (the Makefile sets both).
set -euo pipefail

namespace=taskmaster-demo
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Control plane (real etcd, kube-apiserver, controller-manager, scheduler; kwok nodes)"
kubectl version
kubectl get nodes -o wide

step "A Job in namespace $namespace, its pod run by kwok"
kubectl create namespace "$namespace" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl -n "$namespace" delete job hello --ignore-not-found >/dev/null
kubectl -n "$namespace" apply -f examples/demo-job.yaml
kubectl -n "$namespace" wait --for=condition=Complete job/hello --timeout=60s
kubectl -n "$namespace" get job,pods -l job-name=hello

step "Done. The cluster stays up: 'make cluster-down' stops it."
