#!/usr/bin/env bash
# The main job on the lab, from a fresh machine: lab hosts, a swarm, the example stack, status.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export SWARMSMITH_CLUSTER=examples/demo/swarmsmith.yml
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "bootstrap: lab hosts, engines over SSH, swarm init (private advertise address), joins, labels"
swarmsmith up
step "second run: nothing to change"
swarmsmith up
step "the tiny busybox image on every node (nothing can be pulled here)"
swarmsmith image-load
if swarmsmith deploy --help >/dev/null 2>&1; then
  step "plan, then deploy the example stack and watch it converge"
  swarmsmith plan -c examples/demo/stack.yml web
  swarmsmith deploy -c examples/demo/stack.yml web
  step "redeploy without changes: no service is touched"
  swarmsmith deploy -c examples/demo/stack.yml web
  step "the web service answers on its host-mode port (lab hosts only; no IPVS in the lab)"
  for addr in $(swarmsmith status --json | python3 -c 'import json,sys; print(" ".join(n["addr"] for n in json.load(sys.stdin)["nodes"]))'); do
    if reply=$(curl -s --max-time 2 "http://$addr:8080/"); then echo "$addr:8080 -> $reply"; fi
  done
fi
step "status"
swarmsmith status
echo
echo "Tear down with: swarmsmith down --cluster $SWARMSMITH_CLUSTER"
