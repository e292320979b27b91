"""Exit codes on the paths an operator meets on a bad night: a manager whose host key changed or
that cannot be reached (3), a degraded cluster in `status` (5), library errors turned into one
line naming host and operation, and a last-resort handler instead of a traceback."""
from __future__ import annotations

import json
import os
import socket
import threading

import pytest

from provision.base.errors import (EXIT_DEGRADED, EXIT_FAILED, EXIT_UNREACHABLE, SwarmsmithError,
                              UnreachableError)
from tests.conftest import run_cli


# --- a manager showing another host key: an SSH server in this process --------------------

@pytest.fixture(scope="module")
def impostor():
    """An SSH server on loopback whose host key is not the pinned one."""
    import paramiko
    key = paramiko.ECDSAKey.generate()
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            t = paramiko.Transport(conn)
            t.add_server_key(key)
            try:
                t.start_server(server=paramiko.ServerInterface())
            except Exception:
                pass
    threading.Thread(target=serve, daemon=True).start()
    yield srv.getsockname()[1]
    stop.set()
    srv.close()


def _cluster(tmp_path, port: int) -> str:
    import paramiko
    pinned = paramiko.ECDSAKey.generate()
    (tmp_path / "id").write_text("not used: the host key check comes first\n")
    (tmp_path / "c.yml").write_text(
        "name: relx\nprovider: static\nssh: {key: id}\nstatic:\n  hosts:\n"
        f"    - {{name: m1, address: 127.0.0.1, role: manager, port: {port}}}\n")
    (tmp_path / "stack.yml").write_text("services:\n  web: {image: busybox}\n")
    state = tmp_path / ".swarmsmith" / "relx"
    os.makedirs(state)
    (state / "inventory.json").write_text(json.dumps({"hosts": {"m1": {
        "role": "manager", "public_address": "127.0.0.1", "node_id": "n1", "port": port,
        "host_key": f"{pinned.get_name()} {pinned.get_base64()}"}}}))
    return str(tmp_path / "c.yml")


@pytest.mark.parametrize("argv", [
    ["status"], ["deploy", "-c", "{dir}/stack.yml", "web"], ["rollback", "web"],
    ["redeploy", "-c", "{dir}/stack.yml", "--lock-wait", "0", "web"], ["rm", "web"],
    ["unlock", "web"]])
def test_changed_host_key_of_the_manager_is_exit_3(tmp_path, impostor, argv):
    path = _cluster(tmp_path, impostor)
    argv = [a.format(dir=tmp_path) for a in argv]
    r = run_cli(argv[0], "--cluster", path, *argv[1:], timeout=60)
    assert r.returncode == EXIT_UNREACHABLE, r.stdout + r.stderr
    assert "m1: host key for 127.0.0.1 changed" in r.stderr and "Traceback" not in r.stderr


def test_no_manager_reachable_is_exit_3(monkeypatch, tmp_path):
    from provision.engine_api import access
    from provision.engine_api.manager import NoManagerError
    from provision.remote.ssh import Session
    path = _cluster(tmp_path, 1)

    def refuse(self):
        raise UnreachableError("cannot reach 127.0.0.1:1 over SSH within 10s", host=self.host.name)
    monkeypatch.setattr(Session, "connect", refuse)
    # the shared connection (deploy and the stack commands) and a command's own one alike
    with pytest.raises(UnreachableError, match="no manager reachable") as e:
        access.connect(path, shared=True)
    assert e.value.exit_code == EXIT_UNREACHABLE
    with pytest.raises(NoManagerError, match="cannot reach 127.0.0.1:1") as e:
        access.connect(path)
    assert e.value.exit_code == EXIT_UNREACHABLE and e.value.all_unreachable


# --- library errors become ours ---------------------------------------------------------------

class _Resp:
    status_code = 404
    reason = "Not Found"


def test_guarded_api_names_host_and_operation_and_keeps_the_status():
    import docker
    import requests
    from provision.engine_api.sessions import GuardedAPI
    from provision.engine_api.adapter import is_not_found as _is_not_found

    class Client:
        def nodes(self):
            raise requests.exceptions.ConnectionError("Connection aborted: EOF")

        def inspect_service(self, name):
            raise docker.errors.NotFound("no such service", response=_Resp(),
                                         explanation=f"service {name} not found")

        def tasks(self, filters=None):
            import paramiko
            raise paramiko.SSHException("SSH session not active")
    api = GuardedAPI(Client(), "m1")
    with pytest.raises(UnreachableError) as e:
        api.nodes()
    assert str(e.value).startswith("m1: Engine API nodes: the connection to the manager failed")
    with pytest.raises(SwarmsmithError) as e:
        api.inspect_service("st_web")
    assert str(e.value) == "m1: Engine API inspect service: service st_web not found (HTTP 404)"
    assert e.value.exit_code == EXIT_FAILED and _is_not_found(e.value)
    with pytest.raises(UnreachableError, match="m1: Engine API tasks: .*SSH session not active"):
        api.tasks()


def test_engine_api_puts_its_own_operation_in_front():
    import docker
    from provision.engine_api.sessions import GuardedAPI
    from provision.engine_api.adapter import EngineAPI

    class Client:
        def services(self):
            raise docker.errors.APIError("500", response=type("R", (), {"status_code": 500,
                                         "reason": "x"})(), explanation="raft: no leader")
    with pytest.raises(SwarmsmithError) as e:
        EngineAPI(GuardedAPI(Client(), "m1")).current()
    assert str(e.value) == "m1: Engine API list services: raft: no leader (HTTP 500)"


def test_last_resort_handler_prints_one_line(monkeypatch, capsys):
    import cli

    def boom(args):
        raise KeyError("a bug")
    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    parser._subparsers._group_actions[0].choices["status"].set_defaults(func=boom)
    monkeypatch.delenv("SWARMSMITH_DEBUG", raising=False)
    assert cli.main(["status"]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unexpected KeyError" in err and "SWARMSMITH_DEBUG=1" in err
    monkeypatch.setenv("SWARMSMITH_DEBUG", "1")
    with pytest.raises(KeyError):
        cli.main(["status"])


# --- status: degraded is exit 5 -----------------------------------------------------------------

def _node(name, role="worker", state="ready", reach=None):
    n = {"ID": name * 3, "Description": {"Hostname": name}, "Spec": {"Role": role,
         "Availability": "active"}, "Status": {"State": state, "Addr": "10.0.0.1"}}
    if role == "manager":
        n["ManagerStatus"] = {"Leader": reach == "leader", "Reachability": reach or "reachable"}
    return n


class StatusAPI:
    def __init__(self, nodes, running=2, desired=2, name="web_web"):
        self._nodes, self.running, self.desired, self.name = nodes, running, desired, name

    def nodes(self):
        return self._nodes

    def tasks(self, filters=None):
        return [{"ServiceID": "s1", "Status": {"State": "running" if i < self.running
                                                else "pending"}} for i in range(self.desired)]

    def services(self):
        return [{"ID": "s1", "Spec": {"Name": self.name, "Mode": {"Replicated": {
            "Replicas": self.desired}}, "TaskTemplate": {"ContainerSpec": {"Image": "b"}}}}]


@pytest.mark.parametrize("api, problem", [
    (StatusAPI([_node("m", "manager", reach="leader"), _node("w")]), None),
    (StatusAPI([_node("m", "manager", reach="leader"), _node("w", state="down")]),
     "node w is down"),
    (StatusAPI([_node("m", "manager", reach="leader"), _node("w")], running=1),
     "service web_web: 1/2 running"),
    (StatusAPI([_node("m", "manager", reach="leader"), _node("m2", "manager", "down",
                                                             "unreachable"),
                _node("m3", "manager", "down", "unreachable")]), "quorum lost: 1/3"),
])
def test_status_exit_code(monkeypatch, capsys, tmp_path, api, problem):
    import cli
    from provision.engine_api import access
    from provision.engine_api.manager import Manager
    conn = Manager(host=None, session=None, api=api)
    monkeypatch.setattr(conn, "close", lambda: None)
    monkeypatch.setattr(access, "connect", lambda path, **kw: conn)
    code = cli.main(["status", "--cluster", str(tmp_path / "c.yml"), "--json"])
    st = json.loads(capsys.readouterr().out)
    if problem is None:
        assert code == 0 and st["problems"] == []
    else:
        assert code == EXIT_DEGRADED == 5
        assert any(p.startswith(problem) for p in st["problems"]), st["problems"]


def test_status_text_names_nodes_services_and_why_degraded(monkeypatch, capsys, tmp_path):
    import cli
    from provision.engine_api import access
    from provision.engine_api.manager import Manager
    m = _node("m", "manager", reach="leader")
    m["Description"]["Engine"] = {"EngineVersion": "20.10.24+dfsg1"}     # wider than its column
    api = StatusAPI([m, _node("w")], running=1)
    conn = Manager(host=None, session=None, api=api)
    monkeypatch.setattr(conn, "close", lambda: None)
    monkeypatch.setattr(access, "connect", lambda path, **kw: conn)
    code = cli.main(["status", "--cluster", str(tmp_path / "c.yml")])
    lines = capsys.readouterr().out.splitlines()
    assert code == 5
    assert lines[0].startswith("managers: quorum healthy (1/1")
    header = next(x for x in lines if x.startswith("NODE"))
    assert header.split() == ["NODE", "ROLE", "STATE", "AVAIL", "MANAGER", "ENGINE", "ADDR", "LABELS"]
    m = next(x for x in lines if x.startswith("m "))
    assert m.split()[:5] == ["m", "manager", "ready", "active", "leader"]
    assert header.index("ROLE") == m.index("manager")        # columns line up
    assert header.index("ADDR") == m.index("10.0.0.1")        # past the long engine version too
    assert any(x.startswith("web_web ") and " 1/2 " in x for x in lines)
    assert lines[lines.index("DEGRADED:") + 1].strip().startswith("service web_web: 1/2 running")


def test_status_service_columns_line_up_past_a_long_name(monkeypatch, capsys, tmp_path):
    import cli
    from provision.engine_api import access
    from provision.engine_api.manager import Manager
    long = "a-rather-long-stack-name_and-its-service"          # wider than its column
    api = StatusAPI([_node("m", "manager", reach="leader")], name=long)
    conn = Manager(host=None, session=None, api=api)
    monkeypatch.setattr(conn, "close", lambda: None)
    monkeypatch.setattr(access, "connect", lambda path, **kw: conn)
    cli.main(["status", "--cluster", str(tmp_path / "c.yml")])
    lines = capsys.readouterr().out.splitlines()
    header = next(x for x in lines if x.startswith("SERVICE"))
    row = next(x for x in lines if x.startswith(long))
    assert header.split() == ["SERVICE", "MODE", "REPLICAS", "UPDATE", "PORTS", "IMAGE"]
    assert header.index("MODE") == row.index("replicated")
    assert header.index("IMAGE") == len(row) - 1 and row.endswith(" b")


def test_ssh_connection_lost_under_a_command_is_exit_3_naming_host_and_operation():
    import paramiko
    from types import SimpleNamespace

    from provision.remote.command import Command
    from provision.base.hosts import Host
    from provision.remote.ssh import Session

    class Transport:
        def open_session(self, timeout=None):
            raise paramiko.SSHException("SSH session not active")
    s = Session(Host("w1", "10.0.0.2"))
    s._conn = SimpleNamespace(client=SimpleNamespace(get_transport=lambda: Transport()))
    with pytest.raises(UnreachableError) as e:
        s.run(Command.of("docker", "info", description="read engine facts"))
    assert str(e.value) == ("w1: read engine facts: the SSH connection failed "
                            "(SSHException: SSH session not active)")
    assert e.value.exit_code == EXIT_UNREACHABLE


@pytest.mark.parametrize("alive", [True, False])
def test_a_command_that_ends_without_reading_its_stdin_is_its_exit_status(alive):
    """A host without curl ends `sh -c 'curl … --data-binary @-'` at once (127) while the
    request is still being sent: its status says why, not a lost connection. A connection
    that did die while sending is still exit 3."""
    from types import SimpleNamespace

    from provision.remote.command import Command
    from provision.base.hosts import Host
    from provision.remote.ssh import Session

    class Channel:
        def settimeout(self, t): pass
        def exec_command(self, wire): pass
        def recv_stderr(self, n): return b"sh: 1: curl: not found\n" if not self.drained() else b""
        def drained(self):
            self.n = getattr(self, "n", 0) + 1
            return self.n > 1
        def sendall(self, data): raise OSError("Socket is closed")
        def shutdown_write(self): pass
        def recv(self, n): return b""
        def recv_exit_status(self): return 127
        def close(self): pass

    class Transport:
        def open_session(self, timeout=None): return Channel()
        def is_active(self): return alive
    s = Session(Host("w1", "10.0.0.2"))
    s._conn = SimpleNamespace(client=SimpleNamespace(get_transport=lambda: Transport()))
    cmd = Command.shell("curl --data-binary @- http://x", description="join", stdin=b"{}" * 10)
    if alive:
        r = s.run(cmd, check=False)
        assert r.exit_status == 127 and "curl: not found" in r.stderr
    else:
        with pytest.raises(UnreachableError) as e:
            s.run(cmd, check=False)
        assert str(e.value) == "w1: join: the SSH connection failed (OSError: Socket is closed)"
