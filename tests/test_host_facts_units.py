"""The facts command, run for real by sh against a stand-in `docker`: engine and swarm state in
one docker call, the swarm's JSON kept intact (its certificates carry escaped newlines), and on a
manager the cluster's record read in the same round trip."""
from __future__ import annotations

import base64
import json
import os
import subprocess

from provision import facts as F
from provision.cluster_record import L_CLUSTER, ConfigSnapshot, RecordStore, config_name, encode

SWARM = {"LocalNodeState": "active", "NodeID": "n1", "NodeAddr": "10.0.0.1",
         "ControlAvailable": True, "Cluster": {"ID": "c1", "TLSInfo": {
             "TrustRoot": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"}},
         "RemoteManagers": [{"NodeID": "n1", "Addr": "10.0.0.1:2377"}]}
RECORD = {"format": 1, "name": "sp0", "cluster_id": "c1", "hosts": {}, "provider": "lab",
          "provider_state": {}}
CONFIG = {"ID": "cfg2", "Spec": {"Name": config_name("sp0", 2), "Data": base64.b64encode(
    encode(RECORD)).decode(), "Labels": {L_CLUSTER: "sp0", L_CLUSTER + ".version": "2"}}}

FAKE_DOCKER = """#!/bin/sh
log="$(dirname "$0")/calls"; echo "$*" >> "$log"
[ -e "$(dirname "$0")/down" ] && { echo "Cannot connect to the Docker daemon" >&2; exit 1; }
case "$1 $2" in
  "info -f") printf '%s\\n' "20.10.24 $SWARM_JSON" ;;
  "config ls") [ -n "$NO_CONFIGS" ] || echo cfg2 ;;
  "config inspect") printf '%s\\n' "$CONFIG_JSON" ;;
  *) exit 3 ;;
esac
"""


def run_facts(tmp_path, cmd, swarm=SWARM, down=False, no_configs=False):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "docker").write_text(FAKE_DOCKER)
    (bin_dir / "docker").chmod(0o755)
    if down:
        (bin_dir / "down").write_text("")
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}",
               SWARM_JSON=json.dumps(swarm, separators=(",", ":")),    # as Go prints it
               CONFIG_JSON=json.dumps([CONFIG]), NO_CONFIGS="1" if no_configs else "")
    out = subprocess.run(cmd.argv, env=env, capture_output=True, text=True, check=True).stdout
    calls = (bin_dir / "calls").read_text().splitlines()
    return F.parse_engine_facts(out), calls


def test_one_docker_call_gives_server_and_swarm_with_escapes_intact(tmp_path):
    facts, calls = run_facts(tmp_path, F.ENGINE_FACTS)
    assert facts["server"] == "20.10.24"
    assert facts["swarm"]["state"] == "active" and facts["swarm"]["is_manager"]
    assert facts["swarm"]["cluster_id"] == "c1"
    assert [c.split()[0] for c in calls] == ["info"]
    assert facts["records"] is None            # ENGINE_FACTS does not read the record


def test_a_manager_sends_the_record_along_and_it_reads_without_the_engine_api(tmp_path):
    facts, calls = run_facts(tmp_path, F.host_facts("sp0", L_CLUSTER))
    assert f"config ls -q --filter label={L_CLUSTER}=sp0" in calls
    assert RecordStore(ConfigSnapshot(facts["records"]), "sp0").read() == (2, RECORD)


def test_a_worker_and_a_stopped_engine_send_no_record(tmp_path):
    worker = {**SWARM, "ControlAvailable": False, "Cluster": None}
    facts, calls = run_facts(tmp_path, F.host_facts("sp0", L_CLUSTER), swarm=worker)
    assert facts["records"] is None and not any("config" in c for c in calls)
    assert facts["swarm"]["state"] == "active" and not facts["swarm"]["is_manager"]
    facts, _ = run_facts(tmp_path, F.host_facts("sp0", L_CLUSTER), down=True)
    assert facts["server"] == "" and facts["swarm"]["state"] == "inactive"
    assert facts["records"] is None


def test_a_manager_without_a_record_says_so_and_the_command_succeeds(tmp_path):
    facts, calls = run_facts(tmp_path, F.host_facts("sp0", L_CLUSTER), no_configs=True)
    assert facts["records"] == [] and not any("inspect" in c for c in calls)
    assert RecordStore(ConfigSnapshot(facts["records"]), "sp0").read() == (0, None)
