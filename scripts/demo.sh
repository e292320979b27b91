#!/usr/bin/env bash
# The main job on the lab, from a fresh machine: lab hosts, a swarm, the tutorial's app (a Flask
# API, redis, haproxy) built from Debian packages and pushed to the nodes without a registry,
# deployed and watched, answering through its entry point, then a rolling update to VERSION=2.0
# while a request loop counts failed requests.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
T=examples/tutorial
export SWARMSMITH_CLUSTER=${SWARMSMITH_CLUSTER:-$T/swarmsmith.yml}
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "bootstrap: lab hosts, engines over SSH, swarm init (private advertise address), joins"
swarmsmith up
step "second run: nothing to change"
swarmsmith up
step "images: the API, redis and haproxy from Debian packages (built once, then cached), pushed to every node over SSH"
swarmsmith images build $T/images.yml --push
step "plan, then deploy the stack and watch it converge"
swarmsmith plan -c $T/stack.yml tutorial
swarmsmith deploy -c $T/stack.yml tutorial
step "values into redis: a one-shot job on the stack's network"
FIRST_NAME=Ada LAST_NAME=Lovelace ENVIRONMENT=demo swarmsmith deploy -c $T/seed.yml tutorial-seed

manager=$(swarmsmith status --json | python3 -c 'import json,sys; print(next(n["addr"] for n in json.load(sys.stdin)["nodes"] if n["role"] == "manager"))')
url="http://$manager:8080/"
step "the API answers through haproxy on $url (host-mode port; haproxy finds the tasks through swarm's DNS)"
for _ in $(seq 60); do
  if reply=$(curl -sf --max-time 2 "$url") && [[ $reply == *Ada* ]]; then break; fi
  sleep 1
done
echo "$reply"

step "rolling update to VERSION=2.0 (start-first, one task at a time) while a request loop counts failures"
VERSION=2.0 python3 scripts/request_loop.py "$url" --max-seconds 240 -- swarmsmith deploy -c $T/stack.yml tutorial
step "after the update: every answer carries app-version 2.0"
for _ in 1 2 3; do curl -s --max-time 2 "$url"; done

step "status"
swarmsmith status
echo
echo "Tear down with: swarmsmith down --cluster $SWARMSMITH_CLUSTER"
