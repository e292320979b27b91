"""The facts command, run for real by sh against a stand-in `docker` and `curl`: engine and swarm
state in one engine call (through the socket with curl where the host has it, else the CLI),
the swarm's JSON kept intact (its certificates carry escaped newlines), and on a manager the
cluster's record read in the same round trip."""
from __future__ import annotations

import base64
import json
import os
import subprocess

from provision.remote import facts as F
from provision.engine_api.cluster_record import L_CLUSTER, ConfigSnapshot, RecordStore, config_name, encode

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
  "info -f") if [ "$3" = "{{json .Swarm}}" ]; then printf '%s\\n' "$SWARM_JSON"
             else printf '%s\\n' "20.10.24 $SWARM_JSON"; fi ;;
  "config ls") [ -n "$NO_CONFIGS" ] || echo cfg2 ;;
  "config inspect") printf '%s\\n' "$CONFIG_JSON" ;;
  *) exit 3 ;;
esac
"""

# the socket through curl: absent (exit 127, as the shell says of a missing command) unless
# the test gives the host curl; then /info, /configs and /nodes answer as the engine does
FAKE_CURL = """#!/bin/sh
log="$(dirname "$0")/calls"; echo "curl $*" >> "$log"
[ -n "$HAS_CURL" ] || exit 127
[ -e "$(dirname "$0")/down" ] && exit 7
for url; do :; done
case "$url" in
  http://localhost/info) printf '%s\\n' "$INFO_JSON" ;;
  http://localhost/configs*) if [ -n "$NO_CONFIGS" ]; then echo "[]"; else printf '%s\\n' "$CONFIG_JSON"; fi ;;
  *) exit 22 ;;
esac
"""


def run_facts(tmp_path, cmd, swarm=SWARM, down=False, no_configs=False, curl=False,
              parse=F.parse_engine_facts):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in (("docker", FAKE_DOCKER), ("curl", FAKE_CURL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    if down:
        (bin_dir / "down").write_text("")
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}",
               SWARM_JSON=json.dumps(swarm, separators=(",", ":")),    # as Go prints it
               INFO_JSON=json.dumps({"ServerVersion": "20.10.24", "Swarm": swarm},
                                    separators=(",", ":")),
               CONFIG_JSON=json.dumps([CONFIG]), NO_CONFIGS="1" if no_configs else "",
               HAS_CURL="1" if curl else "")
    # the engine's socket and pid file, here: present while the engine runs
    sock, pid = tmp_path / "docker.sock", tmp_path / "docker.pid"
    if down:
        sock.unlink(missing_ok=True)
    else:
        sock.write_text("")
    script = cmd.argv[-1].replace(F.SOCKET, str(sock)).replace("/var/run/docker.pid", str(pid))
    out = subprocess.run([*cmd.argv[:-1], script], env=env, capture_output=True, text=True,
                         check=True).stdout
    calls = [c for c in (bin_dir / "calls").read_text().splitlines()
             if curl or not c.startswith("curl ")]
    return parse(out), calls


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


def test_without_curl_the_cli_answers_and_a_stopped_engine_is_not_asked(tmp_path):
    facts, calls = run_facts(tmp_path, F.ENGINE_FACTS)
    assert facts["server"] == "20.10.24" and [c.split()[0] for c in calls] == ["info"]
    stopped = tmp_path / "stopped"
    stopped.mkdir()
    facts, calls = run_facts(stopped, F.ENGINE_FACTS, down=True)
    assert facts["server"] == "" and calls == []


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


def test_with_curl_the_socket_answers_and_no_docker_process_runs(tmp_path):
    facts, calls = run_facts(tmp_path, F.host_facts("sp0", L_CLUSTER), curl=True)
    assert facts["server"] == "20.10.24"
    assert facts["swarm"]["state"] == "active" and facts["swarm"]["is_manager"]
    assert facts["swarm"]["cluster_id"] == "c1" and facts["swarm"]["node_addr"] == "10.0.0.1"
    assert RecordStore(ConfigSnapshot(facts["records"]), "sp0").read() == (2, RECORD)
    assert all(c.startswith("curl ") for c in calls), calls
    assert any(f"%22{L_CLUSTER}%3Dsp0%22" in c for c in calls)    # the filter, URL-encoded


def test_with_curl_a_worker_sends_no_record_and_a_stopped_engine_is_not_asked_twice(tmp_path):
    worker = {**SWARM, "ControlAvailable": False, "Cluster": None}
    facts, calls = run_facts(tmp_path, F.host_facts("sp0", L_CLUSTER), swarm=worker, curl=True)
    assert facts["records"] is None and facts["server"] == "20.10.24"
    assert facts["swarm"]["state"] == "active" and not facts["swarm"]["is_manager"]
    assert len(calls) == 1
    facts, calls = run_facts(tmp_path, F.host_facts("sp0", L_CLUSTER), down=True, curl=True)
    assert facts["server"] == "" and facts["swarm"]["state"] == "inactive"
    # neither socket nor pid file: the engine is stopped, and the CLI is not asked in vain
    assert [c.split()[0] for c in calls][-1:] == ["curl"]


def test_the_facts_script_starts_no_process_but_ip_cat_and_the_engine_call(tmp_path):
    """Every process the script starts is paid on every host on every run: the usual helpers
    are wrapped to log themselves, and only ip, cat and curl may show."""
    import shutil
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("ip", "cat", "hostname", "sed", "awk", "tr", "head", "grep", "cut", "date"):
        real = shutil.which(tool)
        if real:
            (bin_dir / tool).write_text(f'#!/bin/sh\necho {tool} >> "{bin_dir}/calls"\nexec {real} "$@"\n')
            (bin_dir / tool).chmod(0o755)
    facts, calls = run_facts(tmp_path, F.ENGINE_FACTS, curl=True)
    assert facts["server"] == "20.10.24" and facts["hostname"]
    assert {c.split()[0] for c in calls} <= {"cat", "curl", "ip"}, calls


def test_parse_info_section_takes_server_and_swarm_and_a_broken_answer_means_no_engine():
    info = {"ServerVersion": "24.0.7", "Swarm": {"LocalNodeState": "locked", "NodeID": "n9"}}
    out = "hostname=h\n---info---\n" + json.dumps(info) + "\n---daemon.json---\n{}\n"
    f = F.parse_engine_facts(out)
    assert f["server"] == "24.0.7" and f["swarm"]["state"] == "locked"
    assert f["swarm"]["node_id"] == "n9" and f["daemon_json"] == {}
    f = F.parse_engine_facts("hostname=h\n---info---\nnot json\n---daemon.json---\n")
    assert f["server"] == "" and f["swarm"]["state"] == "inactive"


def test_swarm_facts_through_the_socket_else_the_cli(tmp_path):
    """The swarm step's own read (after init, after a join the engine did not tell the ID of,
    the runbooks): curl's whole info where the host has curl, else the CLI's Swarm part; the
    same facts either way."""
    want = F.swarm_facts(SWARM)
    facts, calls = run_facts(tmp_path, F.SWARM_FACTS, curl=True, parse=F.parse_swarm_facts)
    assert facts == want and not any(c.startswith("info") for c in calls)
    (tmp_path / "bin" / "calls").unlink()
    facts, calls = run_facts(tmp_path, F.SWARM_FACTS, parse=F.parse_swarm_facts)
    assert facts == want and calls == ["info -f {{json .Swarm}}"]
