#!/usr/bin/env bash
# The main job on the lab, from a fresh machine: lab hosts, a swarm, the tutorial's app (a Flask
# API, redis, haproxy) built from Debian packages and pushed to the nodes without a registry,
# deployed and watched, answering through its entry point, then a rolling update to VERSION=2.0
# while a request loop counts failed requests. Day two: a worker drained and activated under the
# request loop, and the git agent: a commit pushed to a repository on a lab host is rolled out
# by the agent inside the swarm, with no deploy from here.
# Safe to run again on the same lab.
set -euo pipefail
cd "$(dirname "$0")/.."
# SWARMSMITH_DEMO_SETUP=0 skips the setup (a machine where it ran, whose installed entry point
# may belong to another checkout)
[ "${SWARMSMITH_DEMO_SETUP:-1}" = 0 ] || ./scripts/setup.sh
# `swarmsmith` is this checkout's code (what setup.sh installs), also for the commands the
# request loop starts, whichever checkout an installed entry point names
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
printf '#!/bin/sh\nexec python3 %q/cli.py "$@"\n' "$PWD" > "$bin/swarmsmith"
chmod +x "$bin/swarmsmith"
export PATH="$bin:$PATH"
T=examples/tutorial
export SWARMSMITH_CLUSTER=${SWARMSMITH_CLUSTER:-$T/swarmsmith.yml}
step() { printf '\n\033[1m== %s\033[0m  [%d s]\n' "$*" "$SECONDS"; }

step "bootstrap: lab hosts, engines over SSH, swarm init (private advertise address), joins"
swarmsmith up
step "second run: nothing to change"
swarmsmith up
step "images: the API, redis and haproxy from Debian packages (built once, then cached), pushed to every node over SSH"
swarmsmith images build $T/images.yml --push
step "plan, then deploy the stack and watch it converge"
# an agent left by an earlier run would take this run's deploys for drift: it goes first
gone=$(swarmsmith agent remove)
[[ $gone == *"no changes"* ]] || printf 'the agent of an earlier run:\n%s\n' "$gone"
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

# No `swarmsmith backup` here: with the tutorial's single manager the copy stops that engine and
# the tasks on it, the app runs short of replicas until swarm settles, and the restarted engine may
# fail to rejoin the stack's overlay network (Docker's "error creating vxlan interface: file
# exists"), leaving the app down. docs/runbooks.md shows backups.
step "day two: drain a worker while the request loop runs (it waits until the worker's tasks run elsewhere), then activate it"
python3 scripts/request_loop.py "$url" --max-seconds 120 -- swarmsmith node drain tutorial-worker-1
swarmsmith node activate tutorial-worker-1

step "the git agent: the stack follows a branch of a repository served by a lab host's sshd"
# lab hosts see this machine's /tmp; the repository is served by the sshd of the last worker,
# to a deploy key that may run git and nothing else there, and whose host key is pinned
G=/tmp/swarmsmith-demo-$(sed -n 's/^name: *//p' "$SWARMSMITH_CLUSTER")
rm -rf "$G" && mkdir -p "$G"
git() { command git -c user.name=swarmsmith-demo -c user.email=demo@example.invalid "$@"; }
git init -q --bare -b main "$G/app.git"
git init -q -b main "$G/work"
cp $T/stack.yml $T/haproxy.cfg "$G/work/"
echo "VERSION=2.0" > "$G/work/.env"
printf 'name: tutorial\nstacks:\n  - {name: tutorial, compose: stack.yml, env_file: .env}\n' \
  > "$G/work/swarmsmith.yml"
git -C "$G/work" add -A && git -C "$G/work" commit -qm "the tutorial's stack, VERSION 2.0"
git -C "$G/work" push -q "$G/app.git" main
read -r git_addr login_key git_host_key < <(python3 -c 'import sys
from provision.engine_api.sessions import inventory_hosts
h = inventory_hosts(sys.argv[1], "worker")[-1]
print(h.public_address, h.key_path, h.host_key)' "$SWARMSMITH_CLUSTER")
[ -n "$git_host_key" ] || { echo "no worker in the inventory"; exit 1; }
echo "$git_addr $git_host_key" > "$G/known_hosts"
ssh-keygen -q -t ed25519 -N "" -C swarmsmith-demo-deploy -f "$G/deploy_key"
printf 'restrict,command="git-shell -c \\"$SSH_ORIGINAL_COMMAND\\"" %s\n' "$(cat "$G/deploy_key.pub")" |
  ssh -i "$login_key" -o IdentitiesOnly=yes -o BatchMode=yes -o GlobalKnownHostsFile=/dev/null \
    -o UserKnownHostsFile="$G/known_hosts" "root@$git_addr" \
    'f=/etc/ssh/authorized_keys; grep -v swarmsmith-demo-deploy $f > $f.new; cat >> $f.new; cat $f.new > $f; rm $f.new'
{ cat "$SWARMSMITH_CLUSTER"
  printf 'agent:\n  repo: ssh://root@%s%s/app.git\n  branch: main\n  interval: 5\n' "$git_addr" "$G"
  printf '  deploy_key: deploy_key\n  known_hosts: known_hosts\n'; } > "$G/swarmsmith.yml"
echo "cluster file with agent: $G/swarmsmith.yml"; sed -n '/^agent:/,$p' "$G/swarmsmith.yml"
export AGENT_CLUSTER=$G/swarmsmith.yml
since=$(date -u +%Y-%m-%dT%H:%M:%SZ)
swarmsmith agent install --cluster "$AGENT_CLUSTER"
# the agent has reconciled commit $1 and every stack of it converged (or had nothing to change)
agent_at() {
  swarmsmith agent status --cluster "$AGENT_CLUSTER" --json | python3 -c 'import json, sys
st = json.load(sys.stdin)["status"] or {}
sys.exit(0 if st.get("commit") == sys.argv[1] and all(s.get("outcome") in ("converged", "unchanged")
         for s in (st.get("stacks") or {}).values()) else 1)' "$1"
}
wait_agent() {
  for _ in $(seq 240); do agent_at "$1" && return; sleep 1; done
  echo "the agent did not reach commit $1 within 240 s"; return 1
}
export -f agent_at wait_agent
wait_agent "$(git -C "$G/work" rev-parse HEAD)"
swarmsmith agent status --cluster "$AGENT_CLUSTER"

step "a commit to the repository (VERSION=3.0): the agent rolls it out; nothing is deployed from here"
echo "VERSION=3.0" > "$G/work/.env"
git -C "$G/work" commit -qam "the API at VERSION 3.0" && git -C "$G/work" push -q "$G/app.git" main
git -C "$G/work" log --oneline -1
commit=$(git -C "$G/work" rev-parse HEAD)
python3 scripts/request_loop.py "$url" --max-seconds 300 -- bash -c 'wait_agent "$0"' "$commit"
swarmsmith agent status --cluster "$AGENT_CLUSTER"
swarmsmith audit tutorial --since "$since"
for _ in 1 2 3; do curl -s --max-time 2 "$url"; done

step "status"
swarmsmith status
echo
echo "demo done in $SECONDS s. Tear down with: swarmsmith down --cluster $SWARMSMITH_CLUSTER"
