"""The wait for a started engine: by the clock, giving up early when dockerd exited, and the
engine's own last log lines as the reason; `up` waits once more for an engine that answered
`docker version` but not `docker info`, and names the reason when it still does not answer."""
from __future__ import annotations

import os
import subprocess
import time
from types import SimpleNamespace

import pytest

from provision import bootstrap
from provision.engine import install as engine
from provision.base.errors import SwarmsmithError
from provision.remote.ssh import Result


def _fake_bin(tmp_path, docker: str, pgrep: str, curl: str | None = None) -> dict:
    """Stand-ins for `docker`, `pgrep` and `curl` (the engine's socket: as the CLI unless told)."""
    b = tmp_path / "bin"
    b.mkdir()
    for name, body in (("docker", docker), ("pgrep", pgrep), ("curl", curl or docker)):
        (b / name).write_text("#!/bin/sh\n" + body + "\n")
        (b / name).chmod(0o755)
    return {**os.environ, "PATH": f"{b}:/usr/bin:/bin"}


def test_wait_gives_up_early_when_dockerd_is_gone_and_says_why(tmp_path):
    env = _fake_bin(tmp_path, "exit 1", "exit 1")
    t0 = time.monotonic()
    p = subprocess.run(["sh", "-c", engine.WAIT_SERVER.argv[-1]], env=env, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 1
    assert p.stderr.startswith("dockerd exited; its last log lines:")
    assert time.monotonic() - t0 < engine.WAIT_SECONDS / 4


def test_wait_returns_once_the_engine_answers(tmp_path):
    count = tmp_path / "count"
    env = _fake_bin(tmp_path, f'n=$(cat {count} 2>/dev/null || echo 0); echo $((n+1)) > {count}; '
                              '[ $n -ge 3 ]', "exit 0")
    env["DOCKER_HOST"] = "tcp://127.0.0.1:9"       # not the default socket: asked every time
    p = subprocess.run(["sh", "-c", engine.WAIT_SERVER.argv[-1]], env=env, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert count.read_text().strip() == "4"


def test_no_docker_process_runs_before_the_engine_socket_exists(tmp_path):
    """Each `docker` costs the host ~20 ms of CPU: polled every 0.2 s on a dozen hosts sharing
    cores while their engines start, those polls took CPU from the engines themselves."""
    import socket
    import threading
    calls, sock = tmp_path / "calls", tmp_path / "docker.sock"
    env = _fake_bin(tmp_path, f'echo x >> {calls}; [ -S {sock} ]', "exit 0")   # as the CLI: no socket, no answer
    env.pop("DOCKER_HOST", None)
    script = engine.WAIT_SERVER.argv[-1].replace("/var/run/docker.sock", str(sock))
    made = []

    def engine_starts():
        time.sleep(2.4)          # a dozen polls
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(sock))
        made.append(s)
    t = threading.Thread(target=engine_starts)
    t.start()
    p = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=60)
    t.join()
    made[0].close()
    assert p.returncode == 0, p.stderr
    # about one call a second (an engine may listen elsewhere), and one once the socket is there
    assert 1 <= len(calls.read_text().splitlines()) <= 4


RUNNING = "dockerd=/usr/sbin/dockerd\nsystemd=0\ninitscript=1\nserver={server}\n---swarm---\n{{}}\n---daemon.json---\n"


class Session:
    """Answers the engine step's commands: facts after the wait come from `servers` in turn."""

    def __init__(self, servers):
        self.servers, self.ran = list(servers), []

    def run(self, cmd, check=True, timeout=300):
        self.ran.append(cmd.description)
        if cmd is engine.LOG_TAIL:
            return Result('level=error msg="failed to start daemon: no space left"\n', "", 0)
        if cmd.description == "gather engine and swarm facts":     # after an install: not started
            return Result(RUNNING.format(server=""), "", 0)
        if "then gather engine facts" in cmd.description:
            return Result(RUNNING.format(server=self.servers.pop(0)), "", 0)
        return Result("", "", 0)


def _run(session):
    cf = SimpleNamespace(daemon={}, install="distro", apt_proxy="", apt_mirror="", version="")
    h = SimpleNamespace(name="h1", engine_defaults={}, apt_proxy="")
    facts = {"dockerd": "/usr/sbin/dockerd", "initscript": True, "server": "",
             "daemon_json": None, "apt": False}
    run = SimpleNamespace(cluster=cf, sessions={"h1": session}, facts={"h1": facts},
                          changes=[], warnings=[], progress=lambda *a: None)
    return run, h


def test_an_engine_that_answers_late_is_waited_for_once_more():
    s = Session(["", "20.10.24"])
    run, h = _run(s)
    assert bootstrap._engine_step(run, h)["server"] == "20.10.24"
    assert sum("then gather engine facts" in d for d in s.ran) == 2
    assert run.changes == ["h1: engine started (init script)"] * 2


def test_an_engine_that_never_answers_fails_with_its_log_lines():
    s = Session(["", ""])
    run, h = _run(s)
    with pytest.raises(SwarmsmithError) as e:
        bootstrap._engine_step(run, h)
    assert e.value.host == "h1"
    assert "does not answer after start" in str(e.value)
    assert "no space left" in str(e.value)


def test_a_fresh_install_starts_and_is_waited_for_twice_at_most():
    s = Session(["", "20.10.24"])
    run, h = _run(s)
    run.facts["h1"].update(dockerd="", os="debian")
    assert bootstrap._engine_step(run, h)["server"] == "20.10.24"
    assert s.ran.count("install the Docker engine") == 1
    assert sum("then gather engine facts" in d for d in s.ran) == 2


def _apt_bin(tmp_path, stuck: int) -> dict:
    """Fake `timeout` (the first `stuck` calls end as timed out, 124) and `apt-get` (logs its
    arguments) for the install script."""
    b = tmp_path / "aptbin"
    b.mkdir()
    log, count = tmp_path / "apt.log", tmp_path / "timeouts"
    (b / "timeout").write_text(
        f'#!/bin/sh\nn=$(cat {count} 2>/dev/null || echo 0); echo $((n+1)) > {count}\n'
        f'[ $n -lt {stuck} ] && exit 124\nshift; exec "$@"\n')
    # the script asks apt's version first (whether it knows --error-on): not a call to log
    (b / "apt-get").write_text(f'#!/bin/sh\n[ "$1" = --version ] && exit 0\necho "$*" >> {log}\n')
    for f in ("timeout", "apt-get"):
        (b / f).chmod(0o755)
    return {**os.environ, "PATH": f"{b}:/usr/bin:/bin"}


def test_apt_network_steps_are_bounded_and_retried_and_dpkg_runs_offline(tmp_path):
    _, script = engine.install_script("distro", {"debian"})
    p = subprocess.run(["sh", "-c", script], env=_apt_bin(tmp_path, stuck=2),
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "apt-get update failed or took over 180 s (try 1 of 3)" in p.stderr
    assert "(try 2 of 3)" in p.stderr
    calls = (tmp_path / "apt.log").read_text().splitlines()
    # apt itself drops a connection silent for 30 s and fetches that file again
    net = ("-o Acquire::http::Pipeline-Depth=0 -o Acquire::http::Timeout=30 "
           "-o Acquire::https::Timeout=30 -o Acquire::Retries=3")
    assert calls[0] == f"update -qq {net}"
    assert "--download-only" in calls[1] and calls[1].endswith("docker.io") and net in calls[1]
    assert "--download-only" not in calls[2] and calls[2].endswith("docker.io")   # the install
    assert net not in calls[2]                                                  # no network


def test_apt_that_never_answers_fails_after_three_tries(tmp_path):
    _, script = engine.install_script("distro", {"debian"})
    p = subprocess.run(["sh", "-c", script], env=_apt_bin(tmp_path, stuck=99),
                       capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "(try 3 of 3)" in p.stderr
    assert not (tmp_path / "apt.log").exists()       # nothing installed


def test_an_engine_with_its_socket_is_asked_with_curl_not_the_cli(tmp_path):
    import socket
    calls, sock = tmp_path / "calls", tmp_path / "docker.sock"
    env = _fake_bin(tmp_path, f"echo docker >> {calls}", "exit 0",
                    curl=f'echo "curl $*" >> {calls}; [ -e {tmp_path}/ready ]')
    env.pop("DOCKER_HOST", None)
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(sock))
    (tmp_path / "ready").write_text("")
    script = engine.WAIT_SERVER.argv[-1].replace("/var/run/docker.sock", str(sock))
    try:
        p = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True,
                           timeout=60)
    finally:
        s.close()
    assert p.returncode == 0, p.stderr
    assert calls.read_text().splitlines() == [
        f"curl -sf --max-time 30 --unix-socket {sock} http://localhost/_ping"]
