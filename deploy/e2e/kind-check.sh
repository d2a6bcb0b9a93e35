#!/usr/bin/env bash
# End-to-end check of the polyspec Helm chart on a real cluster (kind or any other):
# install a small CPU model pair, wait for the rollout, run `helm test` (a pod generates tokens
# through the coordinator) and print the generated text.
#
#   deploy/e2e/kind-check.sh                    # uses the current kubectl context
#   KIND_CLUSTER=kind BUILD=1 deploy/e2e/kind-check.sh   # build the image and load it into kind first
#
# Settings (environment):
#   RELEASE (polyspec-e2e)  NAMESPACE (polyspec-e2e)  IMAGE (polyspec:<chart appVersion>; REPOSITORY:TAG)
#   BUILD=1         build IMAGE from deploy/Dockerfile (CPU variant) with docker first
#   KIND_CLUSTER    load IMAGE into this kind cluster (otherwise your nodes must be able to pull IMAGE)
#   TIMEOUT (30m)   rollout deadline: the first start fetches and converts the models
#   VALUES          an extra values file layered over deploy/e2e/kind-values.yaml
#   KEEP=1          keep the release after a successful check (a failed one is always kept)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CHART="$ROOT/deploy/helm/polyspec"
APP_VERSION="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$CHART/Chart.yaml")"
RELEASE="${RELEASE:-polyspec-e2e}"
NAMESPACE="${NAMESPACE:-polyspec-e2e}"
IMAGE="${IMAGE:-polyspec:$APP_VERSION}"
TIMEOUT="${TIMEOUT:-30m}"

# Prints the text of the `polyspec generate --json` line of the test pod's log; statistics to stderr.
PRINT_RESULT='
import json, sys
results = [json.loads(line) for line in sys.stdin if line.startswith("{") and "token_ids" in line]
if not results:
    sys.exit("no generation result in the test pod log")
result = results[-1]
print(result["text"])
stats = result["stats"]
summary = (stats["algorithm"], len(result["token_ids"]), stats["acceptance_rate"])
print("algorithm=%s tokens=%d acceptance=%.2f" % summary, file=sys.stderr)
'

log() { printf '==> %s\n' "$*" >&2; }

need() {
  command -v "$1" >/dev/null 2>&1 || { echo "kind-check: '$1' is required but not on PATH" >&2; exit 2; }
}

diagnose() {
  log "check failed; state of release $RELEASE in namespace $NAMESPACE (kept for inspection):"
  kubectl -n "$NAMESPACE" get pods,svc,endpointslices -o wide || true
  kubectl -n "$NAMESPACE" describe pods -l "app.kubernetes.io/instance=$RELEASE" | tail -n 80 || true
  for pod in $(kubectl -n "$NAMESPACE" get pods -l "app.kubernetes.io/instance=$RELEASE" -o name); do
    log "logs of $pod"
    kubectl -n "$NAMESPACE" logs "$pod" --all-containers --tail=40 || true
  done
  log "clean up with: helm uninstall $RELEASE -n $NAMESPACE && kubectl delete namespace $NAMESPACE"
}

main() {
  need kubectl
  need helm
  kubectl version >/dev/null || { echo "kind-check: no reachable cluster in the current context" >&2; exit 2; }

  local repository="${IMAGE%:*}" tag="${IMAGE##*:}"
  if [[ "$repository" == "$IMAGE" || "$tag" == */* ]]; then
    echo "kind-check: IMAGE must be REPOSITORY:TAG, got '$IMAGE'" >&2
    exit 2
  fi
  if [[ "${BUILD:-0}" == 1 ]]; then
    need docker
    log "building $IMAGE"
    docker build -f "$ROOT/deploy/Dockerfile" --build-arg VARIANT=cpu -t "$IMAGE" "$ROOT"
  fi
  if [[ -n "${KIND_CLUSTER:-}" ]]; then
    need kind
    log "loading $IMAGE into kind cluster $KIND_CLUSTER"
    kind load docker-image "$IMAGE" --name "$KIND_CLUSTER"
  fi

  trap diagnose ERR
  local values=(--values "$ROOT/deploy/e2e/kind-values.yaml")
  if [[ -n "${VALUES:-}" ]]; then
    values+=(--values "$VALUES")
  fi
  log "installing release $RELEASE (image $IMAGE) into namespace $NAMESPACE"
  helm upgrade --install "$RELEASE" "$CHART" --namespace "$NAMESPACE" --create-namespace \
    "${values[@]}" --set "image.repository=$repository" --set "image.tag=$tag" \
    --wait --timeout "$TIMEOUT"

  log "waiting for the rollout"
  for workload in $(kubectl -n "$NAMESPACE" get deployments,statefulsets \
      -l "app.kubernetes.io/instance=$RELEASE" -o name); do
    kubectl -n "$NAMESPACE" rollout status "$workload" --timeout "$TIMEOUT"
  done

  log "helm test: generating through the coordinator"
  helm test "$RELEASE" --namespace "$NAMESPACE" --timeout 15m --logs

  local pod
  pod="$(kubectl -n "$NAMESPACE" get pods -o name \
    -l "app.kubernetes.io/instance=$RELEASE,app.kubernetes.io/component=test")"
  log "generated text:"
  kubectl -n "$NAMESPACE" logs "$pod" | python3 -c "$PRINT_RESULT"
  trap - ERR

  if [[ "${KEEP:-0}" == 1 ]]; then
    log "check passed; release $RELEASE kept"
  else
    log "check passed; uninstalling"
    helm uninstall "$RELEASE" --namespace "$NAMESPACE" --wait
    kubectl delete namespace "$NAMESPACE" --wait=false
  fi
}

main "$@"
