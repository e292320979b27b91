"""Plan against live specs, apply through a fake APIClient, config and CLI wiring."""
from __future__ import annotations

import copy
import io
import json
import os
import subprocess
import sys
import textwrap

import pytest

from provision.base.errors import InputError, SwarmsmithError
from stacks.plan_apply.apply import apply, resolve_ids, rm_plan
from stacks import api as stacks_api
from provision.engine_api.adapter import EngineAPI
from stacks.plan_apply.plan import CREATE, REMOVE, UNCHANGED, UPDATE, Current, make_plan
from stacks.plan_apply.plan_render import render_text

from tests.fakes.engine import DIGEST, MANAGER_TOKEN, FakeEngine


STACK = """
version: "3.8"
services:
  web:
    image: nginx:1.25
    command: nginx -g "daemon off;"
    environment: {MODE: prod, DB_PASSWORD: "s3cret-value"}
    ports: ["8080:80"]
    networks: {front: {aliases: [www]}}
    volumes: ["data:/data"]
    secrets: [pw]
    configs: [{source: conf, target: /etc/app.conf}]
    healthcheck: {test: [CMD, "true"], interval: 5s}
    deploy:
      replicas: 2
      update_config: {order: start-first, parallelism: 1}
      restart_policy: {condition: on-failure}
      resources: {limits: {memory: 64M}}
  worker:
    image: busybox
    deploy: {mode: global}
networks:
  front: {attachable: true}
volumes:
  data: {}
secrets:
  pw: {file: ./pw.txt}
configs:
  conf: {file: ./app.conf}
"""


@pytest.fixture
def files(tmp_path):
    (tmp_path / "pw.txt").write_text("hunter2-secret-content")
    (tmp_path / "app.conf").write_text("a=1")
    f = tmp_path / "stack.yml"
    f.write_text(STACK)
    return tmp_path, f


def opts_for(**kw) -> stacks_api.DeployOptions:
    """DeployOptions (detached unless told); the command line's no_* flag names work too."""
    kw.setdefault("detach", True)
    for flag in ("no_versioned_names", "no_update_defaults"):
        if flag in kw:
            kw[flag[3:]] = not kw.pop(flag)
    return stacks_api.DeployOptions(**kw)


def deploy_result(f, engine, **kw) -> stacks_api.DeployResult:
    return stacks_api.deploy("st", [str(f)], opts_for(**kw), engine=engine)


def deploy(api, f, **kw):
    """(exit code, what `swarmsmith deploy` prints on stdout) of a deploy of stack st through
    the API, rendered by the command line's renderer."""
    import contextlib

    import cli
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        result = stacks_api.deploy("st", [str(f)], opts_for(**kw), engine=EngineAPI(api),
                                   on_progress=cli._Renderer())
        code = cli._print_deploy(result, as_json=False)
    assert code == result.exit_code
    return code, out.getvalue()


def plan_result(f, engine, **kw) -> stacks_api.PlanResult:
    return stacks_api.plan("st", [str(f)], opts_for(**kw), engine=engine)


def plan_of(api, f, **kw):
    return plan_result(f, EngineAPI(api), **kw).to_dict()


def test_first_deploy_creates_everything_in_order(files):
    _, f = files
    api = FakeEngine()
    code, out = deploy(api, f)
    assert code == 0
    kinds = [url.split("/")[1] for verb, url in api.calls]
    assert kinds == ["networks", "networks", "secrets", "configs", "services", "services"]
    web = next(s for s in api.services_.values() if s["Spec"]["Name"] == "st_web")
    cs = web["Spec"]["TaskTemplate"]["ContainerSpec"]
    secret_id = next(iter(api.secrets_))
    assert cs["Secrets"][0]["SecretID"] == secret_id          # placeholder resolved
    assert cs["Configs"][0]["ConfigID"] in api.configs_
    assert "+ service st_web" in out and "s3cret-value" not in out
    assert "hunter2" not in out


def test_a_deploy_reads_nodes_once_and_services_only_for_the_plan_and_the_watch(files):
    """The plan's listings serve the deadlock check, the image check and the watch's
    baseline: one node listing and one service listing before the apply (the audit record
    lists the services once more afterwards, for the images they run now)."""
    _, f = files
    api = FakeEngine()
    for i, n in enumerate(api.node_list):
        n.update(ID=f"node{i}", Description={"Hostname": f"host{i}"})
    reads = []
    for name in ("nodes", "services"):
        real = getattr(api, name)
        setattr(api, name, lambda *a, _n=name, _r=real, **k: reads.append(_n) or _r(*a, **k))
    images = []
    engine = EngineAPI(api)
    engine.node_images = lambda nodes: images.append(len(nodes)) or {}
    stacks_api.deploy("st", [str(f)], opts_for(detach=True), engine=engine)
    assert reads == ["nodes", "services", "services"]
    assert images == [3]            # the image check was asked, with the one listing's nodes


def test_redeploy_of_unchanged_stack_changes_nothing(files):
    _, f = files
    api = FakeEngine()
    deploy(api, f)
    versions = {i: s["Version"]["Index"] for i, s in api.services_.items()}
    api.calls.clear()
    plan = plan_of(api, f)
    assert plan["counts"] == {"create": 0, "update": 0, "unchanged": 6, "remove": 0}, plan
    code, out = deploy(api, f)
    assert api.calls == []                                    # not one write
    assert {i: s["Version"]["Index"] for i, s in api.services_.items()} == versions


def test_the_plan_keeps_the_live_versions_of_its_stack_services_for_the_watch():
    from stacks.specs.convert import StackSpec
    live = [{"ID": "a", "Version": {"Index": 7}, "Spec": {"Name": "st_web", "Labels": {
                "com.docker.stack.namespace": "st"}}},
            {"ID": "b", "Version": {"Index": 3}, "Spec": {"Name": "other_web", "Labels": {
                "com.docker.stack.namespace": "other"}}}]
    plan = make_plan(StackSpec("st"), Current(services=live, networks=[], secrets=[], configs=[]))
    assert plan.versions == {"a": 7}


def test_changes_show_fields_old_to_new_and_mask_secrets(files):
    tmp, f = files
    api = FakeEngine()
    deploy(api, f)
    f.write_text(STACK.replace("replicas: 2", "replicas: 3").replace("prod", "staging")
                 .replace("s3cret-value", "other-secret"))
    plan = plan_of(api, f)
    web = next(a for a in plan["actions"] if a["name"] == "st_web")
    assert web["action"] == UPDATE
    changes = {c["path"]: (c["old"], c["new"]) for c in web["changes"]}
    assert changes["Mode.Replicated.Replicas"] == (2, 3)
    env_old, env_new = changes["TaskTemplate.ContainerSpec.Env"]
    assert "DB_PASSWORD=***" in env_new and "MODE=staging" in env_new and "MODE=prod" in env_old
    assert "other-secret" not in json.dumps(plan) and "s3cret" not in json.dumps(plan)
    worker = next(a for a in plan["actions"] if a["name"] == "st_worker")
    assert worker["action"] == UNCHANGED
    deploy(api, f)
    web_svc = next(s for s in api.services_.values() if s["Spec"]["Name"] == "st_web")
    assert web_svc["Version"]["Index"] == 2
    # the digest the daemon pinned is kept: the image did not change
    assert web_svc["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"] == "nginx:1.25" + DIGEST


def test_image_change_is_an_update(files):
    _, f = files
    api = FakeEngine()
    deploy(api, f)
    f.write_text(STACK.replace("nginx:1.25", "nginx:1.26"))
    web = next(a for a in plan_of(api, f)["actions"] if a["name"] == "st_web")
    paths = {c["path"] for c in web["changes"]}
    assert paths == {"Labels.com.docker.stack.image", "TaskTemplate.ContainerSpec.Image"}


def test_secret_content_change_gets_new_name_and_prune_removes_old(files):
    tmp, f = files
    api = FakeEngine()
    deploy(api, f)
    old_secret = next(iter(api.secrets_.values()))["Spec"]["Name"]
    (tmp / "pw.txt").write_text("rotated")
    plan = plan_of(api, f, prune=True)
    acts = {(a["kind"], a["action"]) : a["name"] for a in plan["actions"]
            if a["kind"] == "secret"}
    assert acts[("secret", REMOVE)] == old_secret
    assert acts[("secret", CREATE)] != old_secret
    web = next(a for a in plan["actions"] if a["name"] == "st_web")
    assert [c["path"] for c in web["changes"]] == [
        "TaskTemplate.ContainerSpec.Secrets[0].SecretName"]
    assert "rotated" not in json.dumps(plan)
    deploy(api, f, prune=True)
    assert [s["Spec"]["Name"] for s in api.secrets_.values()] == [acts[("secret", CREATE)]]
    # removal comes after the service update
    deletes = [i for i, c in enumerate(api.calls) if c[0] == "DELETE"]
    updates = [i for i, c in enumerate(api.calls) if c[1].startswith("/services/")]
    assert deletes and updates and min(deletes) > max(updates)


def test_prune_removes_services_only_with_flag(files):
    _, f = files
    api = FakeEngine()
    deploy(api, f)
    f.write_text(STACK.replace("  worker:\n    image: busybox\n    deploy: {mode: global}\n", ""))
    assert not any(a["action"] == REMOVE for a in plan_of(api, f)["actions"])
    plan = plan_of(api, f, prune=True)
    # the default network was used by worker only: it goes too
    assert [(a["kind"], a["name"]) for a in plan["actions"] if a["action"] == REMOVE] == [
        ("network", "st_default"), ("service", "st_worker")]
    deploy(api, f, prune=True)
    assert sorted(s["Spec"]["Name"] for s in api.services_.values()) == ["st_web"]


def test_force_update_counter_is_kept(files):
    _, f = files
    api = FakeEngine()
    deploy(api, f)
    web = next(s for s in api.services_.values() if s["Spec"]["Name"] == "st_web")
    web["Spec"]["TaskTemplate"]["ForceUpdate"] = 4
    assert plan_of(api, f)["counts"]["update"] == 0
    f.write_text(STACK.replace("replicas: 2", "replicas: 1"))
    deploy(api, f)
    assert api.services_[web["ID"]]["Spec"]["TaskTemplate"]["ForceUpdate"] == 4
    assert api.services_[web["ID"]]["Spec"]["Mode"]["Replicated"]["Replicas"] == 1


def test_problems_stop_apply_before_any_change(files):
    _, f = files
    api = FakeEngine()
    f.write_text(STACK.replace("front: {attachable: true}", "front: {external: true}"))
    with pytest.raises(InputError, match="network front is declared external but does not exist"):
        deploy(api, f)
    assert api.calls == []


def test_foreign_service_with_same_name_is_a_problem(files):
    _, f = files
    api = FakeEngine()
    api.services_["x"] = {"ID": "x", "Version": {"Index": 1},
                         "Spec": {"Name": "st_web", "Labels": {}, "TaskTemplate": {}}}
    with pytest.raises(InputError, match="service st_web exists but is not part of stack st"):
        deploy(api, f)


def test_bad_files_never_reach_the_cluster(files):
    _, f = files
    f.write_text(STACK.replace("replicas: 2", "replicas: two"))

    class Exploding:
        def __getattr__(self, name):
            raise AssertionError(f"cluster touched: {name}")
    with pytest.raises(InputError, match="replicas: expected an integer"):
        deploy_result(f, EngineAPI(Exploding()))


def test_deadlock_refuses_only_an_update_and_uses_live_node_count(files):
    _, f = files
    f.write_text(STACK.replace('ports: ["8080:80"]',
                               "ports: [{target: 80, published: 8080, mode: host}]"))
    api = FakeEngine(nodes=2)
    code, out = deploy(api, f)                    # a create cannot deadlock: warned, done
    assert code == 0 and "2 replicas on 2 node(s) deadlocks on update" in out
    assert len(api.services_) == 2
    f.write_text(f.read_text().replace("MODE: prod", "MODE: next"))
    api.calls.clear()
    with pytest.raises(InputError, match="2 replicas on 2 node.*deadlocks on update"):
        deploy(api, f)                            # the update would: refused, nothing sent
    assert api.calls == []
    other = FakeEngine(nodes=3)
    deploy(other, f)
    f.write_text(f.read_text().replace("MODE: next", "MODE: third"))
    assert deploy(other, f)[0] == 0               # 2 replicas on 3 nodes: a free node


def test_dry_run_changes_nothing(files):
    _, f = files
    api = FakeEngine()
    plan = plan_of(api, f)
    assert api.calls == [] and plan["counts"]["create"] == 6


def test_rm_removes_what_carries_the_label(files):
    _, f = files
    api = FakeEngine()
    deploy(api, f)
    api.networks_["other"] = {"Id": "other", "Name": "unrelated", "Labels": {}}
    result = stacks_api.rm("st", engine=EngineAPI(api))
    assert result.found and "remove service st_web" in result.applied.done
    assert not api.services_ and not api.secrets_
    # the deploy's audit record stays: the history outlives the stack
    assert api.configs_ and all(c["Spec"]["Name"].startswith("swarmsmith-audit-st-")
                                for c in api.configs_.values())
    assert list(api.networks_) == ["other"]


def test_resolve_ids_refuses_unknown_names():
    spec = {"Name": "st_web", "TaskTemplate": {"ContainerSpec": {
        "Secrets": [{"SecretID": "<id:st_x>", "SecretName": "st_x"}]}}}
    from provision.base.errors import SwarmsmithError
    with pytest.raises(SwarmsmithError, match="secret st_x not found"):
        resolve_ids(spec, {})
    assert resolve_ids(spec, {("secret", "st_x"): "abc"})["TaskTemplate"]["ContainerSpec"][
        "Secrets"][0]["SecretID"] == "abc"


def test_render_text(files):
    _, f = files
    api = FakeEngine()
    deploy(api, f)
    f.write_text(STACK.replace("replicas: 2", "replicas: 5"))
    plan = plan_result(f, EngineAPI(api)).plan
    text = render_text(plan)
    assert "stack st: 0 to create, 1 to update, 0 to remove, 5 unchanged" in text
    assert "  ~ service st_web" in text
    assert "      Mode.Replicated.Replicas: 2 -> 5" in text


# --- config and the command line -----------------------------------------------------------

def test_config_command_prints_merged_yaml(files, capsys):
    import yaml
    from cli import main
    tmp, f = files
    over = tmp / "o.yml"
    over.write_text('version: "3.8"\nservices:\n  web:\n    image: nginx:${TAG:-9}\n')
    assert main(["config", "-c", str(f), "-c", str(over)]) == 0
    doc = yaml.safe_load(capsys.readouterr().out)
    assert doc["services"]["web"]["image"] == "nginx:9"
    assert doc["services"]["web"]["ports"][0] == {"mode": "ingress", "target": 80,
                                                  "published": 8080, "protocol": "tcp"}
    assert list(doc["services"]) == ["web", "worker"]


def test_config_command_bad_input_exit_2(tmp_path, capsys):
    from cli import main
    f = tmp_path / "s.yml"
    f.write_text("services: {web: {image: nginx, deploy: {replicas: three}}}\n")
    assert main(["config", "-c", str(f)]) == 2
    assert 'services.web.deploy.replicas: expected an integer, got "three"' in \
        capsys.readouterr().err


def test_parsers_mirror_the_docker_cli():
    from cli import build_parser
    p = build_parser()
    a = p.parse_args(["deploy", "--cluster", "c.yml", "-c", "a.yml", "-c", "b.yml",
                      "--env-file", "e", "--prune", "--dry-run", "--strict", "--json", "st"])
    assert (a.cluster, a.compose_files, a.env_file, a.prune, a.dry_run, a.strict, a.json,
            a.stack) == ("c.yml", ["a.yml", "b.yml"], "e", True, True, True, True, "st")
    assert callable(a.func)
    # `plan` is registered once: the cluster's, planning a stack deploy when given -c
    a = p.parse_args(["plan", "-c", "a.yml", "st"])
    assert a.compose_files == ["a.yml"] and a.cluster_file == "st" and callable(a.func)
    a = p.parse_args(["rm", "st"])
    assert a.stack == "st" and callable(a.func)


def test_cli_parser_is_import_light():
    code = ("import sys, cli; cli.build_parser(); "
            "print(sorted(m for m in ('docker', 'paramiko', 'yaml', 'rich') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=".").stdout.strip()
    assert out == "[]"


def test_effective_spec_undoes_daemon_additions():
    from stacks.specs.normalize import effective_spec
    ours = {"Name": "st_web", "Labels": {"a": "1"},
            "TaskTemplate": {"ContainerSpec": {"Image": "nginx:latest", "Privileges": {},
                                               "Secrets": [{"SecretID": "<id:s>", "SecretName": "s",
                                                            "File": {"Name": "s"}}]},
                             "Networks": [{"Target": "st_default", "Aliases": ["web"]}],
                             "Placement": {}, "Resources": {}},
            "Mode": {"Replicated": {}}, "EndpointSpec": {"Ports": [{"TargetPort": 80}]}}
    live = {"Name": "st_web", "Labels": {"a": "1"},
            "TaskTemplate": {"ContainerSpec": {"Image": "docker.io/library/nginx",
                                               "Isolation": "default", "StopGracePeriod": 10**10,
                                               "Privileges": {"CredentialSpec": None,
                                                              "SELinuxContext": None},
                                               "Secrets": [{"SecretID": "q1w2", "SecretName": "s",
                                                            "File": {"Name": "s"}}],
                                               "DNSConfig": {}},
                             "Resources": {"Limits": {}, "Reservations": {}},
                             "RestartPolicy": {"Condition": "any", "Delay": 5 * 10**9,
                                               "MaxAttempts": 0},
                             "Placement": {"Platforms": [{"Architecture": "amd64", "OS": "linux"}]},
                             "ForceUpdate": 0, "Runtime": "container"},
            "Networks": [{"Target": "net123", "Aliases": ["web"]}],     # API < 1.29 place
            "Mode": {"Replicated": {"Replicas": 1}},
            "UpdateConfig": {"Parallelism": 1, "FailureAction": "pause", "Monitor": 5 * 10**9,
                             "MaxFailureRatio": 0, "Order": "stop-first"},
            "EndpointSpec": {"Mode": "vip", "Ports": [{"Protocol": "tcp", "TargetPort": 80,
                                                       "PublishMode": "ingress"}]}}
    names = {"net123": "st_default"}
    assert effective_spec(live, network_names=names) == effective_spec(ours, network_names=names)
    live["Mode"]["Replicated"]["Replicas"] = 0
    assert effective_spec(live, network_names=names) != effective_spec(ours, network_names=names)


def test_update_config_explicit_zero_parallelism_differs_from_absent():
    from stacks.specs.normalize import effective_spec
    a = effective_spec({"UpdateConfig": {"Order": "stop-first"}})   # JSON dropped Parallelism 0
    b = effective_spec({})
    assert a["UpdateConfig"]["Parallelism"] == 0 and b["UpdateConfig"]["Parallelism"] == 1


def test_secret_names_use_a_keyed_hash_configs_stay_plain(files):
    """A versioned secret name must not be an unkeyed hash of the content (a short secret could
    be guessed offline from a CI log); configs may keep the plain hash."""
    from stacks.specs.convert import CONTENT_LABEL, content_hash
    tmp, f = files
    api = FakeEngine()
    deploy(api, f)
    secret = next(iter(api.secrets_.values()))["Spec"]
    config = next(c for c in api.configs_.values()      # not the deploy's audit records
                  if not c["Spec"]["Name"].startswith("swarmsmith-audit-"))["Spec"]
    plain = content_hash("st", "pw", b"hunter2-secret-content", None, None)
    assert plain[:10] not in secret["Name"] and secret["Labels"][CONTENT_LABEL] != plain
    assert config["Labels"][CONTENT_LABEL] == content_hash("st", "conf", b"a=1", None, None)
    # the same swarm gives every runner the same names: a second deploy changes nothing
    assert plan_of(api, f)["counts"]["create"] == 0
    # another swarm (another manager token) gives other names
    other = FakeEngine()
    other.inspect_swarm = lambda: {"ID": "swarm0002", "JoinTokens": {"Manager": "SWMTKN-1-x"}}
    deploy(other, f)
    assert next(iter(other.secrets_.values()))["Spec"]["Name"] != secret["Name"]
    assert config["Name"] in [c["Spec"]["Name"] for c in other.configs_.values()]


def test_audit_line_before_applying_and_after_with_code_and_seconds(files):
    from tests.test_watch_lock_units import read_audit
    tmp, f = files
    (tmp / "c.yml").write_text("name: audt\n")
    audit = tmp / ".swarmsmith" / "audt" / "audit.jsonl"
    os.makedirs(audit.parent)
    api = FakeEngine()
    assert deploy(api, f, cluster_file=str(tmp / "c.yml"))[0] == 0
    start, end = read_audit(audit)
    assert (start["phase"], start["exit_code"], start["seconds"]) == ("start", None, 0.0)
    assert "create service st_web" in start["changes"]
    assert end["phase"] == "end" and end["exit_code"] == 0 and end["seconds"] >= 0
    # a run interrupted while applying has left its start line; a failed one says how it ended
    f.write_text(f.read_text().replace("MODE: prod", "MODE: next"))

    def interrupted(*a, **kw):
        raise KeyboardInterrupt
    api._post_json = interrupted
    with pytest.raises(KeyboardInterrupt):
        deploy(api, f, cluster_file=str(tmp / "c.yml"))
    assert [r["phase"] for r in read_audit(audit)] == ["start", "end", "start"]

    def refused(*a, **kw):
        raise RuntimeError("rpc error: no such image")
    api._post_json = refused
    with pytest.raises(SwarmsmithError):
        deploy(api, f, cluster_file=str(tmp / "c.yml"))
    last = read_audit(audit)[-1]
    assert last["phase"] == "end" and last["exit_code"] == 1 and "no such image" in last["error"]


class SwarmWithTasks(FakeEngine):
    """FakeEngine plus tasks: every service runs its replicas (global: one per node), unless a
    test scripts UpdateStatus and running counts per poll of tasks()."""

    def __init__(self):
        super().__init__()
        self.script = []        # per tasks() call: {service name: (update state, running)}
        self.task_calls = 0

    def tasks(self, filters=None):
        step = self.script[min(self.task_calls, len(self.script) - 1)] if self.script else {}
        self.task_calls += 1
        wanted = set((filters or {}).get("service", []))
        out = []
        for sid, s in self.services_.items():
            if wanted and sid not in wanted:
                continue
            name = s["Spec"]["Name"]
            mode = s["Spec"].get("Mode") or {}
            n = (mode.get("Replicated") or {}).get("Replicas", 1) if "Replicated" in mode else 3
            state, running = step.get(name, (None, n))
            if state:
                s["UpdateStatus"] = {"State": state, "Message": state}
            for slot in range(1, n + 1):
                out.append({"ID": f"{sid}-t{slot}", "ServiceID": sid, "Slot": slot,
                            "NodeID": f"n{slot}", "DesiredState": "running",
                            "Spec": copy.deepcopy(s["Spec"]["TaskTemplate"]),
                            "Status": {"State": "running" if slot <= running else "starting",
                                       "Timestamp": "2026-01-01T00:00:00Z"}})
        return out


def _update_status(api, name, state):
    svc = next(s for s in api.services_.values() if s["Spec"]["Name"] == name)
    svc["UpdateStatus"] = {"State": state, "Message": state}


def test_no_changes_with_everything_settled_still_says_no_changes(files):
    _, f = files
    api = SwarmWithTasks()
    deploy(api, f)
    code, out = deploy(api, f, detach=False)
    assert code == 0 and "stack st: no changes" in out and "not settled" not in out
    assert api.task_calls == 1          # one look at the stack's tasks


def test_no_changes_does_not_hide_a_paused_update(files):
    """A deploy killed mid-update left st_web's update paused: the next deploy with the same
    files plans nothing, but reports the pause and exits 10, not 0."""
    _, f = files
    api = SwarmWithTasks()
    deploy(api, f)
    _update_status(api, "st_web", "paused")
    api.script = [{"st_web": (None, 1)}]
    code, out = deploy(api, f, detach=False)
    assert code == 10, out
    assert "not settled, watching too: st_web (paused, updated 1/2, running 1/2" in out
    assert "no changes" not in out


def test_no_changes_watches_an_update_in_flight_to_its_end(files):
    _, f = files
    api = SwarmWithTasks()
    deploy(api, f)
    _update_status(api, "st_web", "updating")
    # UpdateStatus set in a tasks() answer shows from the next services() answer on
    api.script = [{"st_web": (None, 1)}, {"st_web": (None, 1)}, {"st_web": ("completed", 2)},
                  {"st_web": (None, 2)}]
    code, out = deploy(api, f, detach=False)
    assert code == 0 and "not settled, watching too: st_web (updating, updated 1/2" in out
    assert "converged" in out and api.task_calls >= 3


def test_rotating_the_manager_token_keeps_secret_names_once_the_key_is_pinned(files):
    """Secret names are keyed from the manager token; `tokens rotate --manager` pins today's key
    first, so the deploy after a rotation renames no secret and restarts no service."""
    from provision.swarm.rotation import rotate_tokens
    _, f = files
    api = FakeEngine()
    deploy(api, f)
    names = sorted(s["Spec"]["Name"] for s in api.secrets_.values())

    def rotated():
        return {"ID": "swarm0001", "JoinTokens": {"Manager": "SWMTKN-1-rotated", "Worker": "w"}}

    # without a pin, a new token means new names (what a rotation by hand does)
    unpinned = copy.deepcopy(api)
    unpinned.inspect_swarm = rotated
    assert plan_of(unpinned, f)["counts"]["create"] >= 1

    order = []

    class Engine(EngineAPI):
        def update_swarm(self, **kw):
            order.append("rotate")
            self.api.inspect_swarm = rotated

        def pin_secret_naming_key(self):
            order.append("pin")
            return super().pin_secret_naming_key()

    res = rotate_tokens(Engine(api), worker=False, manager=True)
    assert order == ["pin", "rotate"]
    assert any("pinned" in c for c in res.changes)
    assert plan_of(api, f)["counts"]["create"] == 0
    assert plan_of(api, f)["counts"]["update"] == 0
    deploy(api, f)
    assert sorted(s["Spec"]["Name"] for s in api.secrets_.values()) == names
    # a second rotation pins nothing new and still changes no name
    res = rotate_tokens(Engine(api), worker=True, manager=True)
    assert not any("pinned" in c for c in res.changes)
    assert plan_of(api, f)["counts"]["create"] == 0


def test_audit_history_keeps_changes_not_refusals_or_no_ops(files):
    """A refused plan is bad input and changes nothing, not even the audit history; a deploy
    with nothing to change or watch is not history either (cron's no-ops would push the real
    changes out of the bounded record). A change writes its start and end records."""
    _, f = files
    api = FakeEngine()

    def audit_names():
        return sorted(c["Spec"]["Name"] for c in api.configs_.values()
                      if c["Spec"]["Name"].startswith("swarmsmith-audit-"))
    deploy(api, f)
    first = audit_names()
    assert len(first) == 2                                     # start and end
    assert deploy(api, f)[0] == 0 and audit_names() == first   # nothing to change
    f.write_text(STACK.replace("front: {attachable: true}", "front: {external: true}"))
    with pytest.raises(InputError, match="network front is declared external"):
        stacks_api.deploy("st", [str(f)], opts_for(), engine=EngineAPI(api))
    assert audit_names() == first


class NetworkHeldByTasks:
    """Refuses a network removal as swarm does while tasks of just-removed services still
    hold it, `held` times, then removes it."""

    def __init__(self, held: int):
        self.held, self.removed = held, []

    def __getattr__(self, name):    # apply() looks up its create/update calls up front
        return lambda *a, **k: pytest.fail(f"{name} called")

    def remove(self, kind, id_, name):
        if kind == "network" and self.held:
            self.held -= 1
            raise SwarmsmithError(f"remove network {name}: rpc error: code = FailedPrecondition "
                                  f"desc = network {id_} is in use by task t1")
        self.removed.append((kind, name))


def _rm_network_plan() -> "Plan":
    from stacks.plan_apply.plan import Action, Plan
    return Plan("st", actions=[Action("service", "st_web", REMOVE, id="s1"),
                               Action("network", "st_default", REMOVE, id="n1")])


def test_network_still_held_by_stopping_tasks_is_removed_once_they_are_gone():
    engine, now, slept = NetworkHeldByTasks(held=3), [0.0], []

    def sleep(s):
        slept.append(s)
        now[0] += s
    result = apply(_rm_network_plan(), engine, clock=lambda: now[0], sleep=sleep)
    assert engine.removed == [("service", "st_web"), ("network", "st_default")]
    assert len(slept) == 3 and result.done[-1] == "remove network st_default"


def test_network_held_past_the_deadline_is_an_error_naming_it():
    engine, now = NetworkHeldByTasks(held=10**6), [0.0]

    def sleep(s):
        now[0] += s
    with pytest.raises(SwarmsmithError, match="st_default.*in use by task"):
        apply(_rm_network_plan(), engine, clock=lambda: now[0], sleep=sleep)
    assert engine.removed == [("service", "st_web")]
    assert now[0] >= 90


def test_other_network_errors_are_not_retried():
    class Refuses(NetworkHeldByTasks):
        def remove(self, kind, id_, name):
            if kind == "network":
                raise SwarmsmithError("remove network st_default: permission denied")
            self.removed.append((kind, name))
    with pytest.raises(SwarmsmithError, match="permission denied"):
        apply(_rm_network_plan(), Refuses(0), clock=lambda: 0.0,
              sleep=lambda s: pytest.fail("slept"))


def test_a_network_gone_already_counts_as_removed():
    class GoneAfterOneRefusal(NetworkHeldByTasks):
        def remove(self, kind, id_, name):
            if kind == "network":
                self.held += 1
                raise SwarmsmithError(f"remove network {name}: in use by task t1" if self.held == 1
                                      else f"remove network {name}: network {id_} not found")
            self.removed.append((kind, name))
    engine = GoneAfterOneRefusal(0)
    result = apply(_rm_network_plan(), engine, clock=lambda: 0.0, sleep=lambda s: None)
    assert engine.held == 2 and result.done[-1] == "remove network st_default"


def test_rm_of_objects_already_gone_counts_them_removed():
    from stacks.plan_apply.plan import Action, Plan

    class Gone(NetworkHeldByTasks):
        def remove(self, kind, id_, name):
            self.removed.append((kind, name))
            raise SwarmsmithError(f"remove {kind} {name}: {kind} {id_} not found (HTTP 404)")
    plan = Plan("st", actions=[Action("service", "st_web", REMOVE, id="s1"),
                               Action("secret", "st_pw", REMOVE, id="x1"),
                               Action("network", "st_default", REMOVE, id="n1")])
    engine = Gone(0)
    result = apply(plan, engine, clock=lambda: 0.0, sleep=lambda s: pytest.fail("slept"))
    assert result.done == ["remove service st_web", "remove secret st_pw",
                           "remove network st_default"]


def test_the_secret_naming_key_is_read_only_for_a_stack_with_secrets(files, monkeypatch):
    folder, f = files
    reads = []
    real = EngineAPI.secret_naming_key
    monkeypatch.setattr(EngineAPI, "secret_naming_key",
                        lambda self: reads.append(1) or real(self))
    plain = folder / "plain.yml"
    plain.write_text('version: "3.8"\nservices:\n  web: {image: nginx:1.25}\n'
                     'configs:\n  conf: {file: ./app.conf}\n')
    assert plan_of(FakeEngine(), plain)["actions"] and reads == []
    with_secret = plan_of(FakeEngine(), f)
    assert reads == [1]         # once for the stack, however many secrets use it
    assert any(a["kind"] == "secret" for a in with_secret["actions"])


def test_rm_waits_for_a_held_network_no_longer_than_its_timeout():
    engine, now = NetworkHeldByTasks(held=10**6), [0.0]

    def sleep(s):
        now[0] += s
    with pytest.raises(SwarmsmithError, match="in use by task"):
        apply(_rm_network_plan(), engine, clock=lambda: now[0], sleep=sleep,
              network_release_timeout=10)
    assert 10 <= now[0] < 13
