"""Joins go through the Engine API with the token in the request body, never in a command line
(a command's arguments are readable by every user of the host): with curl on the engine's
socket, the body on its stdin, or through swarmsmith's Engine API client where the host has
no curl."""
from __future__ import annotations

import json

import pytest

from provision.base.errors import SwarmsmithError
from provision.base.hosts import Host
from provision.remote.command import Secret
from provision.remote.ssh import Result
from provision.swarm.step import SwarmStep
from tests.fakes.clock import FakeClock

TOKEN = "SWMTKN-1-3pu6hszjas19xyp7ghgosyx9k8atbfcr8p2is99znpy26u2lkl-1awxwuwd3z9j1z3puu7rcgdbx"


class FakeSession:
    """`join`: what the host's curl join answers, as (stdout, exit status); the default is a
    host without curl (exit 127)."""

    def __init__(self, log: list, join=("", 127)):
        self.log, self.join, self.stdin = log, join, []

    def run(self, cmd, check=True, timeout=300):
        self.log.append(cmd.wire())
        if "/swarm/join" in cmd.wire():
            self.stdin.append(cmd.stdin)
            return Result(self.join[0], "", self.join[1])
        out = TOKEN + "\n" if "join-token" in cmd.wire() else ""
        return Result(out, "", 0)


class FakeEngine:
    def __init__(self, fail: str = ""):
        self.calls, self.closed, self.fail = [], False, fail

    def join_swarm(self, remote_addrs, join_token, listen_addr=None, advertise_addr=None):
        self.calls.append((remote_addrs, join_token, listen_addr, advertise_addr))
        if self.fail:
            raise RuntimeError(self.fail)

    def close(self):
        self.closed = True


def step(engine, log, join=("", 127)):
    m = Host("m1", "10.0.0.1", role="manager")
    w = Host("w1", "10.0.0.2", role="worker")
    sessions = {"m1": FakeSession(log), "w1": FakeSession(log, join)}
    return SwarmStep(sessions, [m, w], {"m1": "10.1.0.1", "w1": "10.1.0.2"}, {}, {"hosts": {}},
                     engine_api=lambda host: engine), m, w


def test_join_with_curl_sends_the_token_on_stdin_not_in_a_command():
    info = json.dumps({"Swarm": {"LocalNodeState": "active", "NodeID": "node-w1"}})
    log, engine = [], FakeEngine()
    s, m, w = step(engine, log, join=(f"\n200\n---info---\n{info}\n", 0))
    assert s._join(w, m, "worker", "10.1.0.1", leave_first=False) == "node-w1"
    assert json.loads(s.s["w1"].stdin[0]) == {
        "ListenAddr": "10.1.0.2:2377", "AdvertiseAddr": "10.1.0.2",
        "RemoteAddrs": ["10.1.0.1:2377"], "JoinToken": TOKEN}
    assert not any("SWMTKN-" in c for c in log)         # never an argument
    assert engine.calls == []                           # no Engine API client opened
    assert s.changes == ["w1: joined as worker (advertise 10.1.0.2)"]
    # joined, but the info did not come: the ID is left to the facts
    s, m, w = step(FakeEngine(), [], join=("\n200\n", 7))
    assert s._join(w, m, "worker", "10.1.0.1", leave_first=False) == ""


@pytest.mark.parametrize("answer, words", [
    ((json.dumps({"message": f"rejected token {TOKEN}: connection refused"}) + "\n503\n"
      "---info---\n{}", 0), "rejected token ***: connection refused (HTTP 503)"),
    (("\n000", 28), "no answer from the engine's socket (curl exit 28)"),
])
def test_a_curl_join_refused_or_cut_short_is_an_error_without_the_token(answer, words):
    engine = FakeEngine()
    s, m, w = step(engine, [], join=answer)
    with pytest.raises(SwarmsmithError) as e:
        s._join(w, m, "worker", "10.1.0.1", leave_first=False)
    assert str(e.value) == (f"w1: join the swarm as worker (Engine API POST /swarm/join via "
                            f"10.1.0.1:2377) failed: {words}")
    # the request may have reached the engine: not sent again through the client
    assert engine.calls == [] and s.changes == []


def test_join_without_curl_sends_token_in_the_api_body_not_in_a_command():
    log, engine = [], FakeEngine()
    s, m, w = step(engine, log)
    s._join(w, m, "worker", "10.1.0.1", leave_first=False)
    assert engine.calls == [(["10.1.0.1:2377"], TOKEN, "10.1.0.2:2377", "10.1.0.2")]
    assert engine.closed
    assert any("join-token" in c for c in log)          # fetched from the leader...
    assert not any("SWMTKN-" in c for c in log)         # ...but never sent as an argument
    assert not any(c.startswith("docker swarm join ") for c in log)
    assert s.changes == ["w1: joined as worker (advertise 10.1.0.2)"]


def test_join_failure_names_host_and_operation_without_the_token():
    log, engine = [], FakeEngine(fail=f"rejected token {TOKEN}: connection refused")
    s, m, w = step(engine, log)
    with pytest.raises(SwarmsmithError) as e:
        s._join(w, m, "worker", "10.1.0.1", leave_first=False)
    text = str(e.value)
    assert text.startswith("w1: join the swarm as worker") and "connection refused" in text
    assert "SWMTKN-" not in text and engine.closed


class NodeAPI(FakeEngine):
    """The leader's Engine API as labels meet it: a node that joined a moment ago answers
    'update out of sequence' while it is still updating its own record."""

    def __init__(self, refusals: int, fail: str = ""):
        super().__init__()
        self.refusals, self.fail_with = refusals, fail
        self.spec = {"Role": "worker", "Labels": {"old": "1", "keep": "x"}}
        self.updates = []

    def inspect_node(self, node_id):
        return {"ID": node_id, "Version": {"Index": 7 + len(self.updates)}, "Spec": dict(self.spec)}

    def update_node(self, node_id, version, node_spec):
        if self.fail_with:
            raise RuntimeError(self.fail_with)
        if self.refusals:
            self.refusals -= 1
            raise RuntimeError("rpc error: code = Unknown desc = update out of sequence")
        self.updates.append((node_id, version, node_spec))
        self.spec = node_spec


def label_step(api, log):
    m = Host("m1", "10.0.0.1", role="manager")
    w = Host("w1", "10.0.0.2", role="worker")
    slept = []
    s = SwarmStep({"m1": FakeSession(log), "w1": FakeSession(log)}, [m, w],
                  {"m1": "10.1.0.1", "w1": "10.1.0.2"}, {"w1": {"zone": "b"}},
                  {"hosts": {"w1": {"labels": ["old"]}}}, engine_api=lambda host: api,
                  sleep=slept.append)
    return s, m, w, slept


def test_labels_go_through_the_leaders_api_and_retry_a_node_still_settling():
    log, api = [], NodeAPI(refusals=2)
    s, m, w, slept = label_step(api, log)
    s._label(m, w, {"id": "n-w1", "labels": {"old": "1", "keep": "x"}})
    assert api.updates == [("n-w1", 7, {"Role": "worker", "Labels": {"keep": "x", "zone": "b"}})]
    assert len(slept) == 2 and log == []            # no CLI process on the manager
    assert s.changes == ["w1: labels zone=b -old"]


def test_a_refused_label_update_names_the_node_and_the_leader():
    log, api = [], NodeAPI(refusals=0, fail="node not found")
    s, m, w, slept = label_step(api, log)
    with pytest.raises(SwarmsmithError) as e:
        s._label(m, w, {"id": "n-w1", "labels": {}})
    assert e.value.host == "m1" and "labels of node n-w1" in str(e.value)
    assert "node not found" in str(e.value) and slept == []


class LocalShell:
    """Runs the command for real under sh, with a stand-in `curl` (the engine's socket) and
    `docker` (the CLI) in PATH."""

    def __init__(self, tmp_path, has_curl: bool):
        self.bin = tmp_path / "bin"
        self.bin.mkdir(exist_ok=True)
        swarm = json.dumps({"ID": "c1", "JoinTokens": {"Worker": TOKEN, "Manager": "SWMTKN-m"}})
        (self.bin / "curl").write_text(
            "#!/bin/sh\necho curl >> \"$(dirname \"$0\")/calls\"\n"
            + ("" if has_curl else "exit 127\n") + f"echo '{swarm}'\n")
        (self.bin / "docker").write_text(
            "#!/bin/sh\necho \"docker $*\" >> \"$(dirname \"$0\")/calls\"\n"
            f"[ \"$4\" = manager ] && echo SWMTKN-m || echo {TOKEN}\n")
        for name in ("curl", "docker"):
            (self.bin / name).chmod(0o755)

    def calls(self) -> list:
        return (self.bin / "calls").read_text().split("\n")[:-1]

    def run(self, cmd, check=True, timeout=300):
        import os
        import subprocess
        p = subprocess.run([str(a) for a in cmd.argv], capture_output=True, input=cmd.stdin,
                           env=dict(os.environ, PATH=f"{self.bin}:{os.environ['PATH']}"))
        return Result(p.stdout.decode(), p.stderr.decode(), p.returncode)


@pytest.mark.parametrize("has_curl", [True, False])
def test_the_token_comes_from_the_leaders_socket_else_the_cli(tmp_path, has_curl):
    s, m, _ = step(FakeEngine(), [])
    s.s["m1"] = shell = LocalShell(tmp_path, has_curl)
    assert s.token(m, "worker").reveal() == TOKEN
    assert s.token(m, "manager").reveal() == "SWMTKN-m"
    if has_curl:
        assert shell.calls() == ["curl", "curl"]          # no `docker` process on the leader
    else:
        assert shell.calls() == ["curl", "docker swarm join-token -q worker",
                                 "curl", "docker swarm join-token -q manager"]


JOIN_CURL = """#!/bin/sh
here=$(dirname "$0")
for url; do :; done
case "$url" in
  */swarm/join) cat > "$here/body"; [ -e "$here/join-exit" ] && { printf '\\n000'; exit $(cat "$here/join-exit"); }
                printf '\\n200' ;;
  */info) [ -e "$here/info-exit" ] && exit $(cat "$here/info-exit")
          echo '{"Swarm": {"LocalNodeState": "active", "NodeID": "node-w1"}}' ;;
esac
"""


@pytest.mark.parametrize("join_exit, info_exit, node_id, through_client", [
    (None, None, "node-w1", False),       # joined; the ID in the same call
    (None, 7, "", False),                 # joined; no info: not joined again through the client
    (127, None, "", True),                # no curl: nothing sent, the client joins
    (7, None, "", True),                  # no socket where curl looks: the client joins
])
def test_the_curl_join_script_for_real(tmp_path, join_exit, info_exit, node_id, through_client):
    engine = FakeEngine()
    s, m, w = step(engine, [])
    s.s["w1"] = shell = LocalShell(tmp_path, True)
    (shell.bin / "curl").write_text(JOIN_CURL)
    for name, value in (("join-exit", join_exit), ("info-exit", info_exit)):
        if value is not None:
            (shell.bin / name).write_text(str(value))
    got = s._join(w, m, "worker", "10.1.0.1", leave_first=False, token=Secret(TOKEN))
    assert got == node_id and bool(engine.calls) == through_client
    if not through_client:
        assert json.loads((shell.bin / "body").read_text())["JoinToken"] == TOKEN


INIT_CURL = """#!/bin/sh
here=$(dirname "$0")
for url; do :; done
case "$url" in
  */swarm/init) cat > "$here/body"
    if [ -e "$here/refuse" ]; then
      printf '{"message":"could not choose an IP address to advertise"}\\n400'; exit 0; fi
    printf '"node-m1"\\n200' ;;
  */info) echo '{"Swarm": {"LocalNodeState": "active", "NodeID": "node-m1", "ControlAvailable": true, "Cluster": {"ID": "cluster-1"}}}' ;;
esac
"""


@pytest.mark.parametrize("case", ["curl", "refused", "no curl"])
def test_swarm_init_through_the_socket_else_the_cli(tmp_path, case):
    s, m, _ = step(FakeEngine(), [])
    s.s["m1"] = shell = LocalShell(tmp_path, True)
    (shell.bin / "curl").write_text("#!/bin/sh\nexit 127\n" if case == "no curl" else INIT_CURL)
    (shell.bin / "docker").write_text(
        "#!/bin/sh\necho \"docker $*\" >> \"$(dirname \"$0\")/calls\"\n"
        "[ \"$1\" = info ] && echo '{\"LocalNodeState\": \"active\", \"NodeID\": \"node-m1\", "
        "\"ControlAvailable\": true, \"Cluster\": {\"ID\": \"cluster-1\"}}'\nexit 0\n")
    if case == "refused":
        (shell.bin / "refuse").write_text("")
        with pytest.raises(SwarmsmithError) as e:
            s._init_leader({"m1": {"state": "inactive"}})
        assert str(e.value) == ("m1: swarm init failed: could not choose an IP address to "
                                "advertise (HTTP 400)")
        assert s.changes == [] and "cluster_id" not in s.inv
        return
    facts = {"m1": {"state": "inactive"}}
    assert s._init_leader(facts) is m
    assert s.inv["cluster_id"] == "cluster-1" and facts["m1"]["node_id"] == "node-m1"
    assert s.changes == ["m1: swarm initialised (advertise 10.1.0.1)"]
    calls = (shell.bin / "calls").read_text().splitlines() if (shell.bin / "calls").exists() \
        else []
    if case == "curl":
        assert json.loads((shell.bin / "body").read_text()) == {
            "ListenAddr": "10.1.0.1:2377", "AdvertiseAddr": "10.1.0.1"}
        assert calls == []                  # no `docker` process: init and state in one call
    else:
        assert calls == ["docker swarm init --advertise-addr 10.1.0.1 --listen-addr 10.1.0.1:2377",
                         "docker info -f {{json .Swarm}}"]


# --- joins swarm finishes in the background (a busy manager) -----------------------------------

BUSY = ("Timeout was reached before node joined. The attempt to join the swarm will continue in "
        "the background. Use the \"docker info\" command to see the current swarm status of your "
        "node.")


class FollowedSession(FakeSession):
    """A host whose curl join is answered 503 "continue in the background"; its swarm facts
    then go through `states` (the last one repeats)."""

    def __init__(self, log: list, states: list):
        answer = json.dumps({"message": BUSY}) + "\n503\n---info---\n{}"
        super().__init__(log, join=(answer, 0))
        self.states, self.reads = states, 0

    def run(self, cmd, check=True, timeout=300):
        from provision.remote import facts as F
        if cmd is F.SWARM_FACTS:
            state = self.states[min(self.reads, len(self.states) - 1)]
            self.reads += 1
            swarm = {"LocalNodeState": state, "NodeID": "node-w1" if state == "active" else "",
                     "Error": "rpc error: certificate signing timed out" if state == "error" else ""}
            return Result(json.dumps({"Swarm": swarm}), "", 0)
        return super().run(cmd, check, timeout)


def Clock() -> FakeClock:
    return FakeClock(0.0)


def followed_step(states, deadline=300.0):
    clock, log, busy = Clock(), [], []
    m = Host("m1", "10.0.0.1", role="manager")
    w = Host("w1", "10.0.0.2", role="worker")
    s = SwarmStep({"m1": FakeSession(log), "w1": FollowedSession(log, states)}, [m, w],
                  {"m1": "10.1.0.1", "w1": "10.1.0.2"}, {}, {"hosts": {}},
                  engine_api=lambda host: FakeEngine(), clock=clock, sleep=clock.sleep,
                  join_deadline=deadline)
    return s, m, w, clock, log, busy


def test_a_join_swarm_finishes_in_the_background_is_followed_to_success():
    s, m, w, clock, log, busy = followed_step(["pending", "pending", "pending", "active"])
    node = s._join(w, m, "worker", "10.1.0.1", leave_first=False, busy=lambda: busy.append(1))
    assert node == "node-w1"
    assert s.s["w1"].reads == 4 and 0 < clock.now < 10
    assert busy == [1]                  # the pacer hears that the manager is busy
    assert s.changes == ["w1: joined as worker (advertise 10.1.0.2)"]
    assert not any("SWMTKN-" in c for c in log)


def test_a_background_join_whose_node_never_appears_fails_naming_node_and_swarms_message():
    s, m, w, clock, log, busy = followed_step(["pending"], deadline=120)
    with pytest.raises(SwarmsmithError) as e:
        s._join(w, m, "worker", "10.1.0.1", leave_first=False)
    text = str(e.value)
    assert e.value.host == "w1" and text.startswith("w1: join the swarm as worker")
    assert "continue in the background" in text and "after 120s the node is pending" in text
    assert 120 <= clock.now < 130 and s.changes == []


def test_a_background_join_swarm_gave_up_on_fails_at_once_with_swarms_error():
    s, m, w, clock, log, busy = followed_step(["pending", "error"])
    with pytest.raises(SwarmsmithError) as e:
        s._join(w, m, "worker", "10.1.0.1", leave_first=False)
    assert "swarm stopped trying the node is error (rpc error: certificate signing timed out)" \
        in str(e.value)
    assert clock.now < 10               # not the whole deadline


def test_a_background_join_through_the_api_client_is_followed_too():
    class Busy503(FakeEngine):
        def join_swarm(self, *a, **k):
            raise RuntimeError(f"503 Server Error: {BUSY}")
    s, m, w, clock, log, busy = followed_step(["pending", "active"])
    s.s["w1"].join = ("", 127)          # no curl on the host
    s.engine_api = lambda host: Busy503()
    assert s._join(w, m, "worker", "10.1.0.1", leave_first=False) == "node-w1"


def test_other_503s_are_still_failures():
    s, m, w, clock, log, busy = followed_step(["active"])
    s.s["w1"].join = (json.dumps({"message": "swarm has no leader"}) + "\n503\n", 0)
    with pytest.raises(SwarmsmithError) as e:
        s._join(w, m, "worker", "10.1.0.1", leave_first=False)
    assert "swarm has no leader (HTTP 503)" in str(e.value) and s.s["w1"].reads == 0


def test_the_pacer_halves_after_a_busy_or_slow_join_and_grows_after_quick_ones():
    from provision.swarm.join_pacing import JoinPacer
    clock = Clock()
    p = JoinPacer(ceiling=16, start=4, slow=10, clock=clock)
    with p.slot():
        clock.now += 1
    assert p.limit == 5
    with p.slot() as busy:
        busy()
    assert p.limit == 2
    with p.slot():
        clock.now += 30                 # slow answer: the manager is struggling
    assert p.limit == 1
    for _ in range(40):
        with p.slot():
            pass
    assert p.limit == 16 and p.lowest == 1


def test_the_pacer_never_runs_more_joins_than_its_limit():
    import threading
    import time as t
    from provision.swarm.join_pacing import JoinPacer
    p = JoinPacer(ceiling=3, start=2)
    active, peak, lock = [0], [0], threading.Lock()

    def join():
        with p.slot():
            with lock:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
            t.sleep(0.01)
            with lock:
                active[0] -= 1
    threads = [threading.Thread(target=join) for _ in range(20)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert 2 <= peak[0] <= 3 and p.active == 0
