"""connect(cluster) -> Manager, the one way to a manager: each candidate's engine is asked over
the Engine API whether it is a usable manager, the first that is (and lists the nodes) is kept,
and the reasons of the others are kept for the error."""
from __future__ import annotations

import pytest

from provision.base.errors import EXIT_FAILED, HostKeyMismatchError, UnreachableError
from provision.engine_api import access as access_mod
from provision.engine_api.manager import NoManagerError
from provision.engine_api.transport import GuardedAPI


def _cluster(tmp_path) -> str:
    key = tmp_path / "id"
    key.write_text("x")
    path = tmp_path / "c.yml"
    path.write_text(f"name: mc0\nprovider: static\nssh: {{key: {key}}}\nstatic:\n  hosts:\n"
                    "    - {name: m1, address: 10.0.0.1, role: manager}\n"
                    "    - {name: m2, address: 10.0.0.2, role: manager}\n"
                    "    - {name: m3, address: 10.0.0.3, role: manager}\n")
    return str(path)


ACTIVE = {"LocalNodeState": "active", "NodeID": "", "ControlAvailable": True}


def _engines(monkeypatch, swarm: dict, nodes_fail=(), unreachable=(), mismatch=()):
    """Fake sessions and engines: `swarm` host -> its Swarm info (None: engine down)."""
    opened, closed = [], []

    class Session:
        def __init__(self, host, **kw):
            self.host = host

        def connect(self):
            opened.append(self.host.name)
            if self.host.name in unreachable:
                raise UnreachableError("cannot reach it over SSH", host=self.host.name)
            if self.host.name in mismatch:
                raise HostKeyMismatchError("host key changed", host=self.host.name)

        def close(self):
            closed.append(self.host.name)

    class Client:
        def __init__(self, name):
            self.name = name

        def info(self):
            return {"Swarm": {**swarm[self.name], "NodeID": f"{self.name}-id"}}

        def nodes(self, filters=None):
            if self.name in nodes_fail:
                raise RuntimeError("rpc error: The swarm does not have a leader")
            return []

        def close(self):
            pass

    def api_client(session, timeout=60):
        if swarm[session.host.name] is None:
            raise UnreachableError("dial-stdio: Cannot connect to the Docker daemon",
                                   host=session.host.name)
        return GuardedAPI(Client(session.host.name), session.host.name)
    monkeypatch.setattr(access_mod, "Session", Session)
    import provision.engine_api.transport as transport
    monkeypatch.setattr(transport, "api_client", api_client)
    monkeypatch.setattr(access_mod, "_CACHE", {})
    return opened, closed


def test_the_first_usable_manager_is_kept_and_the_others_closed(tmp_path, monkeypatch):
    opened, closed = _engines(monkeypatch, {
        "m1": None, "m2": {**ACTIVE, "LocalNodeState": "locked"}, "m3": ACTIVE})
    with access_mod.connect(_cluster(tmp_path), accept_new_host_keys=True) as m:
        assert m.host.name == "m3" and m.facts["node_id"] == "m3-id"
        assert m.api.where == "m3" and m.api.api.node_id == "m3-id"
        assert closed == ["m1", "m2"]
    assert closed == ["m1", "m2", "m3"]         # the `with` closed it


def test_prefer_is_tried_first(tmp_path, monkeypatch):
    opened, _ = _engines(monkeypatch, {"m1": ACTIVE, "m2": ACTIVE, "m3": ACTIVE})
    m = access_mod.connect(_cluster(tmp_path), accept_new_host_keys=True, prefer="m2")
    assert m.host.name == "m2" and opened == ["m2"]


def test_no_usable_manager_names_every_reason(tmp_path, monkeypatch):
    _engines(monkeypatch, {"m1": None, "m2": {**ACTIVE, "ControlAvailable": False},
                           "m3": ACTIVE}, nodes_fail=("m3",))
    with pytest.raises(NoManagerError) as e:
        access_mod.connect(_cluster(tmp_path), accept_new_host_keys=True)
    assert e.value.reasons["m1"].startswith("the engine does not answer (")
    assert e.value.reasons["m2"].startswith("not a manager with control available")
    assert "does not have a leader" in e.value.reasons["m3"]
    assert e.value.exit_code == EXIT_FAILED          # managers answered: not exit 3


def test_the_shared_manager_is_one_connection_and_says_no_manager_reachable(tmp_path,
                                                                            monkeypatch):
    opened, _ = _engines(monkeypatch, {"m1": ACTIVE, "m2": ACTIVE, "m3": ACTIVE})
    path = _cluster(tmp_path)
    first = access_mod.connect(path, accept_new_host_keys=True, shared=True)
    assert access_mod.connect(path, shared=True) is first and opened == ["m1"]
    assert access_mod.access(path).client() is first.api.api
    _engines(monkeypatch, {"m1": None, "m2": None, "m3": None})
    with pytest.raises(UnreachableError, match="no manager reachable:\n  m1: the engine"):
        access_mod.connect(path, accept_new_host_keys=True, shared=True)


def test_a_changed_host_key_stops_the_search(tmp_path, monkeypatch):
    opened, _ = _engines(monkeypatch, {"m1": ACTIVE, "m2": ACTIVE, "m3": ACTIVE},
                         mismatch=("m1",))
    with pytest.raises(HostKeyMismatchError):
        access_mod.connect(_cluster(tmp_path), accept_new_host_keys=True)
    assert opened == ["m1"]                     # never skipped for another manager


def test_host_key_precedence_is_decided_once():
    from types import SimpleNamespace
    cf = SimpleNamespace(pinned_key=lambda name, addr, port: "file-key" if name == "a" else "")
    a, b = SimpleNamespace(name="a", public_address="x", port=22), \
        SimpleNamespace(name="b", public_address="y", port=22)
    assert access_mod.pin_of(cf, a, cached="c", provider="p", recorded="r") == ("file-key", "file")
    assert access_mod.pin_of(cf, b, cached="c", provider="p", recorded="r") == ("c", "cache")
    assert access_mod.pin_of(cf, b, provider="p", recorded="r") == ("p", "provider")
    assert access_mod.pin_of(cf, b, recorded="r") == ("r", "record")
    assert access_mod.pin_of(cf, b) == ("", "")
