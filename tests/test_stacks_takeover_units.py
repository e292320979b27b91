"""Taking over the secrets and configs `docker stack deploy` made (stacks/plan_apply/takeover.py),
planned and applied against a fake Engine API that checks secret updates as swarmkit does."""
from __future__ import annotations

import base64
import json

import pytest

from provision.base.errors import SwarmsmithError
from stacks.plan_apply.takeover import MISMATCH, _rename_refs
from stacks.specs.convert import CONTENT_LABEL, placeholder
from tests.fakes.engine import FakeEngine
from tests.test_stacks_plan_apply_units import STACK, deploy, files, plan_of  # noqa: F401

AS_CLI = dict(no_versioned_names=True, no_update_defaults=True)


class Swarmkit(FakeEngine):
    """FakeEngine that keeps secret data (never returned) and answers updates as swarmkit's
    UpdateSecret/UpdateConfig do: only labels may change; data sent must equal the stored;
    the answer is an empty body, as the Engine API's."""

    def __init__(self):
        super().__init__()
        self.data = {}

    def _post_json(self, url, data=None, params=None):
        parts = url.strip("/").split("/")
        if parts[0] in ("secrets", "configs") and parts[1] != "create":
            obj = (self.secrets_ if parts[0] == "secrets" else self.configs_)[parts[1]]
            stored = self.data.get(parts[1], obj["Spec"].get("Data"))
            if data["Name"] != obj["Spec"]["Name"] or (
                    data.get("Data") is not None and data["Data"] != stored):
                self.calls.append(("REFUSED", url))
                raise RuntimeError("rpc error: code = InvalidArgument desc = only updates to "
                                   "Labels are allowed")
        out = super()._post_json(url, data, params)
        if parts[0] == "secrets" and parts[1] == "create":
            self.data[out["ID"]] = data.get("Data")
        return "" if parts[0] in ("secrets", "configs") and parts[1] != "create" else out

    def _result(self, resp, json=False):
        if json and resp == "":
            raise ValueError("Expecting value: line 1 column 1 (char 0)")
        return resp


def cli_stack(f) -> Swarmkit:
    """The stack as docker stack deploy leaves it: the CLI's names and specs (swarmsmith's
    --no-versioned-names --no-update-defaults, checked equal on the lab), no hash labels."""
    api = Swarmkit()
    code, _ = deploy(api, f, **AS_CLI)
    assert code == 0
    for store in (api.secrets_, api.configs_):
        for obj in store.values():
            obj["Spec"]["Labels"].pop(CONTENT_LABEL, None)
    api.calls.clear()
    return api


def versions(api) -> dict:
    return {s["Spec"]["Name"]: s["Version"]["Index"] for s in api.services_.values()}


def by_name(api, store: str, name: str) -> dict:
    return next(o for o in getattr(api, store).values() if o["Spec"]["Name"] == name)


def named(plan, kind, action=None):
    return {a["name"]: a for a in plan["actions"]
            if a["kind"] == kind and (action is None or a["action"] == action)}


def test_plan_of_a_cli_stack_keeps_the_cli_names_and_changes_no_service(files):
    _, f = files
    api = cli_stack(f)
    plan = plan_of(api, f, no_update_defaults=True)
    assert {a["name"]: a["action"] for a in plan["actions"] if a["kind"] == "service"} == {
        "st_web": "unchanged", "st_worker": "unchanged"}
    conf = named(plan, "config")["st_conf"]
    assert conf["action"] == "unchanged" and "file's content" in conf["note"]
    secret = named(plan, "secret")["st_pw"]
    assert secret["action"] == "update" and secret["content_checked"] is False
    assert secret["changes"] == [{"path": f"Labels.{CONTENT_LABEL}", "old": None,
                                  "new": "(keyed hash of the file)"}]
    assert "could not be checked" in secret["note"] and "no task restarts" in secret["note"]
    assert any("st_pw" in w and "could not be checked" in w for w in plan["warnings"])
    assert plan["counts"] == {"create": 0, "update": 1, "unchanged": 5, "remove": 0}
    assert "hunter2" not in json.dumps(plan)


def test_deploy_takes_over_restarting_nothing_and_records_the_secret_hash(files):
    _, f = files
    api = cli_stack(f)
    before, ids = versions(api), set(api.secrets_) | set(api.configs_)
    code, out = deploy(api, f, no_update_defaults=True)
    assert code == 0
    assert [c for c in api.calls if c[0] != "DELETE"] == [
        ("POST", f"/secrets/{next(iter(api.secrets_))}/update")]     # labels only
    assert versions(api) == before
    assert set(api.secrets_) | set(api.configs_) >= ids
    secret = by_name(api, "secrets_", "st_pw")["Spec"]
    assert len(secret["Labels"][CONTENT_LABEL]) == 64 and "hunter2" not in out
    # from then on nothing at all changes, and the secret is checked by its label
    plan = plan_of(api, f, no_update_defaults=True)
    assert plan["counts"]["unchanged"] == 6 and not plan["warnings"], plan
    assert "label matches" in named(plan, "secret")["st_pw"]["note"]


def test_a_changed_config_moves_to_its_versioned_name(files):
    tmp, f = files
    api = cli_stack(f)
    (tmp / "app.conf").write_text("a=2")
    plan = plan_of(api, f, no_update_defaults=True, prune=True)
    created = named(plan, "config", "create")
    assert len(created) == 1 and next(iter(created)).startswith("st_conf-")
    assert list(named(plan, "config", "remove")) == ["st_conf"]
    web = named(plan, "service")["st_web"]
    assert {c["path"] for c in web["changes"]} == {
        "TaskTemplate.ContainerSpec.Configs[0].ConfigName"}
    assert named(plan, "service")["st_worker"]["action"] == "unchanged"
    assert named(plan, "secret")["st_pw"]["action"] == "update"    # still taken over


def test_a_changed_secret_moves_once_its_hash_is_recorded(files):
    tmp, f = files
    api = cli_stack(f)
    deploy(api, f, no_update_defaults=True)
    (tmp / "pw.txt").write_text("rotated")
    plan = plan_of(api, f, no_update_defaults=True, prune=True)
    created = named(plan, "secret", "create")
    assert len(created) == 1 and next(iter(created)).startswith("st_pw-")
    assert list(named(plan, "secret", "remove")) == ["st_pw"]
    assert [c["path"] for c in named(plan, "service")["st_web"]["changes"]] == [
        "TaskTemplate.ContainerSpec.Secrets[0].SecretName"]
    code, _ = deploy(api, f, no_update_defaults=True, prune=True)
    assert code == 0 and [s["Spec"]["Name"] for s in api.secrets_.values()] == list(created)


def test_a_cli_secret_with_other_content_is_refused_by_swarm_then_replaced(files):
    """The file changed before the first swarmsmith deploy: the plan cannot see it; swarm
    refuses the label update that carries the file's content, nothing else is changed, and
    the next deploy moves the services to a new secret."""
    tmp, f = files
    api = cli_stack(f)
    (tmp / "pw.txt").write_text("changed before the take-over")
    before = versions(api)
    assert named(plan_of(api, f, no_update_defaults=True), "secret")["st_pw"]["action"] \
        == "update"
    with pytest.raises(SwarmsmithError, match="holds other content than its file"):
        deploy(api, f, no_update_defaults=True)
    assert [c[0] for c in api.calls] == ["REFUSED", "POST"]    # no network, no service
    assert versions(api) == before
    assert by_name(api, "secrets_", "st_pw")["Spec"]["Labels"][CONTENT_LABEL] == MISMATCH
    plan = plan_of(api, f, no_update_defaults=True)
    assert len(named(plan, "secret", "create")) == 1
    assert named(plan, "service")["st_web"]["action"] == "update"
    assert deploy(api, f, no_update_defaults=True)[0] == 0
    web = by_name(api, "services_", "st_web")["Spec"]["TaskTemplate"]["ContainerSpec"]
    assert web["Secrets"][0]["SecretName"].startswith("st_pw-")


def test_objects_that_are_not_the_stacks_own_are_not_taken_over(files):
    _, f = files
    api = cli_stack(f)
    by_name(api, "configs_", "st_conf")["Spec"]["Data"] = base64.b64encode(b"other").decode()
    by_name(api, "secrets_", "st_pw")["Spec"]["Labels"]["com.docker.stack.namespace"] = "x"
    plan = plan_of(api, f, no_update_defaults=True)
    assert {n.split("-")[0] for n in named(plan, "secret", "create")} == {"st_pw"}
    assert {n.split("-")[0] for n in named(plan, "config", "create")} == {"st_conf"}
    assert not {"st_pw", "st_conf"} & (set(named(plan, "secret")) | set(named(plan, "config")))


def test_objects_made_with_no_versioned_names_are_kept_by_their_label(files):
    """swarmsmith's own `<stack>_<key>` objects carry the hash label: dropping
    --no-versioned-names later changes nothing."""
    _, f = files
    api = Swarmkit()
    deploy(api, f, **AS_CLI)
    plan = plan_of(api, f, no_update_defaults=True)
    assert plan["counts"]["unchanged"] == 6 and not plan["warnings"], plan


def test_references_are_renamed_everywhere():
    spec = {"Name": "st_web", "TaskTemplate": {"ContainerSpec": {
        "Configs": [{"ConfigName": "st_z-1", "ConfigID": placeholder("st_z-1")},
                    {"ConfigName": "st_c-1", "ConfigID": placeholder("st_c-1"), "Runtime": {}}],
        "Privileges": {"CredentialSpec": {"Config": placeholder("st_c-1")}}}}}
    _rename_refs(spec, "config", "st_c-1", "st_c")
    cs = spec["TaskTemplate"]["ContainerSpec"]
    assert [(r["ConfigName"], r["ConfigID"]) for r in cs["Configs"]] == [
        ("st_c", placeholder("st_c")), ("st_z-1", placeholder("st_z-1"))]
    assert cs["Privileges"]["CredentialSpec"]["Config"] == placeholder("st_c")
