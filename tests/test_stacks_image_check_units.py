"""Image check (stacks/images/check.py) without a cluster: constraint matching, image names,
node listings, and the plan problems it adds through plan_for with a fake engine.  The lab
test is in tests/test_stacks_parity_lab.py."""
from __future__ import annotations


import pytest

from provision.base.errors import InputError
from provision.engine_api.adapter import EngineAPI
from stacks.images.check import Node, matches, names_registry, parse_listing, present
from tests.fakes.engine import FakeEngine
from tests.test_stacks_plan_apply_units import deploy_result, plan_of, plan_result


def node(hostname, role="worker", labels=None, **kw):
    return Node(id=f"id-{hostname}", hostname=hostname, role=role, addr="", labels=labels or {},
                engine_labels=kw.pop("engine_labels", {}), **kw)


@pytest.mark.parametrize("constraints, expected", [
    ([], {"m", "w1", "w2"}),
    (["node.role == worker"], {"w1", "w2"}),
    (["node.role==manager"], {"m"}),
    (["node.role != manager"], {"w1", "w2"}),
    (["node.hostname == w2"], {"w2"}),
    (["node.labels.zone == a"], {"w1"}),
    (["node.labels.zone != a"], {"m", "w2"}),          # absent label: != holds
    (["node.labels.zone == A"], set()),                # label values are case-sensitive
    (["node.role == WORKER"], {"w1", "w2"}),           # node attributes are not
    (["engine.labels.disk == ssd"], {"w2"}),
    (["node.role == worker", "node.labels.zone == a"], {"w1"}),
    (["node.platform.os == linux"], {"m", "w1", "w2"}),
    (["something.else == x"], {"m", "w1", "w2"}),      # not evaluated: no narrowing
    (["node.id == id-m"], {"m"}),
])
def test_constraints(constraints, expected):
    nodes = [node("m", "manager", os="linux"), node("w1", labels={"zone": "a"}, os="linux"),
             node("w2", engine_labels={"disk": "ssd"}, os="linux")]
    assert {n.hostname for n in nodes if matches(n, constraints)} == expected


@pytest.mark.parametrize("ref, registry", [
    ("nginx", False), ("nginx:1.25", False), ("swarmsmith/busybox:1", False),
    ("docker.io/nginx:1.25", True), ("registry.example.com/app:1", True),
    ("localhost:5000/app", True), ("localhost/app", True), ("host:5000/a/b:1", True),
])
def test_names_registry(ref, registry):
    assert names_registry(ref) is registry


def test_listing_and_presence():
    listed = parse_listing("swarmsmith/busybox|1|<none>\n"
                           f"nginx|latest|sha256:{'a' * 64}\n"
                           "<none>|<none>|<none>\n"
                           "docker.io/library/redis|7|<none>\n")
    assert present("swarmsmith/busybox:1", listed)
    assert present("docker.io/swarmsmith/busybox:1", listed)
    assert present("nginx", listed) and present("nginx:latest", listed)
    assert present(f"nginx@sha256:{'a' * 64}", listed)
    assert present(f"nginx:latest@sha256:{'a' * 64}", listed)
    assert not present(f"nginx@sha256:{'b' * 64}", listed)
    assert present("redis:7", listed) and not present("redis:6", listed)
    assert not present("swarmsmith/busybox:2", listed)


def test_the_engine_api_listing_gives_the_same_entries_as_the_cli():
    import json
    api = [{"RepoTags": ["swarmsmith/busybox:1"], "RepoDigests": []},
           {"RepoTags": ["nginx:latest"], "RepoDigests": [f"nginx@sha256:{'a' * 64}"]},
           {"RepoTags": ["<none>:<none>"], "RepoDigests": ["<none>@<none>"]},
           {"RepoTags": None, "RepoDigests": None},
           {"RepoTags": ["localhost:5000/app:2"], "RepoDigests": []}]
    cli = parse_listing("swarmsmith/busybox|1|<none>\n"
                        f"nginx|latest|sha256:{'a' * 64}\n"
                        "<none>|<none>|<none>\n"
                        "localhost:5000/app|2|<none>\n")
    assert parse_listing(json.dumps(api)) == cli
    assert present("localhost:5000/app:2", cli) and not present("localhost:5000/app:5000", cli)
    with pytest.raises(ValueError):      # cut short: the node is "not checked", not "without it"
        parse_listing('[{"RepoTags": ["app:1"]}]\nswarmsmith/busybox|1|<none>\n')


def test_the_manager_deployed_to_is_asked_through_its_engine_not_over_ssh(monkeypatch):
    from types import SimpleNamespace

    import provision.engine_api.sessions as dockerapi
    from stacks.images import check
    hosts = [SimpleNamespace(name=n, private_address="", public_address=f"10.0.0.{i}")
             for i, n in enumerate(("m1", "w1", "w2"), 1)]
    asked_over_ssh = []

    class Session:
        def __init__(self, host):
            self.host = host

        def run(self, cmd, check=False, timeout=None):
            asked_over_ssh.append(self.host.name)
            return SimpleNamespace(exit_status=0, stdout="swarmsmith/busybox|1|<none>\n",
                                   stderr="")

        def close(self):
            pass
    monkeypatch.setattr(dockerapi, "inventory_hosts", lambda path: hosts)
    monkeypatch.setattr(dockerapi, "session_for", lambda host, path: Session(host))
    local = SimpleNamespace(own_node_id=lambda: "id-m1",
                            local_images=lambda: [{"RepoTags": ["app:1"]}])
    nodes = [node("m1", role="manager"), node("w1"), node("w2")]
    got = check.ssh_lister("swarmsmith.yml", local=local)(nodes)
    assert sorted(asked_over_ssh) == ["w1", "w2"]
    assert got["id-m1"] == {"app:1"} and got["id-w1"] == {"swarmsmith/busybox:1"}
    # an engine that cannot tell its node: that node is asked over SSH like any other
    asked_over_ssh.clear()
    local.own_node_id = lambda: (_ for _ in ()).throw(RuntimeError("no answer"))
    check.ssh_lister("swarmsmith.yml", local=local)(nodes)
    assert sorted(asked_over_ssh) == ["m1", "w1", "w2"]
    # a listing cut short is a node not checked (a warning), not a node without the image
    Session.run = lambda self, cmd, check=False, timeout=None: SimpleNamespace(
        exit_status=0, stdout='[{"RepoTags": ["app:1"]', stderr="")
    got = check.ssh_lister("swarmsmith.yml")(nodes)
    assert all(isinstance(v, ValueError) for v in got.values())


class NodeAPI(FakeEngine):
    """FakeEngine with named nodes; the engine gets a `node_images` lister."""

    def __init__(self, images: dict):
        super().__init__()
        self.node_list = [
            {"ID": f"id-{h}", "Description": {"Hostname": h},
             "Spec": {"Role": "manager" if h == "m" else "worker", "Availability": "active"},
             "Status": {"State": "ready"}} for h in ("m", "w1", "w2")]
        self.images = images
        self.asked = []

    def lister(self, nodes):
        self.asked.append(sorted(n.hostname for n in nodes))
        return {n.id: self.images.get(n.hostname, RuntimeError("unreachable")) for n in nodes}


def engine_for(api):
    engine = EngineAPI(api)
    engine.node_images = api.lister
    return engine


STACK = """version: "3.9"
services:
  web:
    image: app:1
    deploy:
      placement: {constraints: [node.role == worker]}
  admin:
    image: app:1
    deploy:
      placement: {constraints: [node.role == manager]}
"""


def test_missing_image_is_a_plan_problem_and_nothing_changes(tmp_path):
    f = tmp_path / "stack.yml"
    f.write_text(STACK)
    api = NodeAPI({"m": {"app:1"}, "w1": set(), "w2": {"app:1"}})
    with pytest.raises(InputError) as err:
        deploy_result(f, engine_for(api))
    msg = str(err.value)
    assert "stack.yml: services.web.image: image app:1 is not on node(s) w1 " in msg
    assert "admin" not in msg
    assert api.services_ == {} and api.networks_ == {}
    assert api.asked == [["m", "w1", "w2"]]          # one listing round for all nodes


def test_present_everywhere_deploys_and_unchanged_services_are_not_checked(tmp_path):
    f = tmp_path / "stack.yml"
    f.write_text(STACK)
    api = NodeAPI({"m": {"app:1"}, "w1": {"app:1"}, "w2": {"app:1"}})
    engine = engine_for(api)
    assert deploy_result(f, engine).exit_code == 0
    assert len(api.services_) == 2 and len(api.asked) == 1
    api.images = {}                                   # gone from every node
    assert deploy_result(f, engine).exit_code == 0
    assert len(api.asked) == 1                        # nothing to create or update: no listing


def test_unreachable_node_is_a_warning(tmp_path):
    f = tmp_path / "stack.yml"
    f.write_text(STACK)
    api = NodeAPI({"m": {"app:1"}, "w1": {"app:1"}})  # w2 cannot be asked
    plan = plan_result(f, engine_for(api)).to_dict()
    assert plan["problems"] == []
    assert any("node w2 could not be checked: unreachable" in w for w in plan["warnings"])


def test_registry_images_and_plain_fake_engines_are_not_checked(tmp_path):
    f = tmp_path / "stack.yml"
    f.write_text(STACK.replace("image: app:1", "image: registry.example.com/app:1"))
    api = NodeAPI({})
    plan = plan_of(api, f)                            # plain EngineAPI: no lister, no check
    assert plan["problems"] == []
    assert deploy_result(f, engine_for(api)).exit_code == 0
    assert api.asked == []                            # names a registry: pullable


def test_cli_made_secret_keeps_its_labels(tmp_path):
    """A secret `docker stack deploy` made (no content-hash label) is unchanged, with a
    warning; a config the CLI made with other content is a problem."""
    (tmp_path / "pw.txt").write_text("pw")
    (tmp_path / "c.conf").write_text("new")
    f = tmp_path / "stack.yml"
    f.write_text('version: "3.9"\nservices:\n  web:\n    image: app:1\n'
                 "    secrets: [pw]\n    configs: [c]\n"
                 "secrets:\n  pw: {file: ./pw.txt}\nconfigs:\n  c: {file: ./c.conf}\n")
    api = FakeEngine()
    api.secrets_["s1"] = {"ID": "s1", "Version": {"Index": 3},
                          "Spec": {"Name": "st_pw",
                                   "Labels": {"com.docker.stack.namespace": "st"}}}
    import base64
    api.configs_["c1"] = {"ID": "c1", "Version": {"Index": 4},
                          "Spec": {"Name": "st_c", "Labels": {"com.docker.stack.namespace": "st"},
                                   "Data": base64.b64encode(b"old").decode()}}
    result = plan_result(f, EngineAPI(api), versioned_names=False)
    assert result.exit_code == 2                      # the command line refuses such a plan
    plan = result.to_dict()
    actions = {(a["kind"], a["name"]): a["action"] for a in plan["actions"]}
    assert actions[("secret", "st_pw")] == "unchanged"
    assert any("secret st_pw was not made by swarmsmith" in w for w in plan["warnings"])
    assert any("config st_c exists with other content" in p for p in plan["problems"])
