"""Small reliability fixes: a killed run's socket folder, the get.docker.com script's path,
`lab ls --json`, help texts."""
from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time

from tests.conftest import REPO, run_cli


def test_killed_runs_socket_folder_is_removed_by_the_next(tmp_path):
    """SIGKILL skips atexit: the next forwarder removes folders whose owner pid is gone,
    and leaves a live run's folder alone."""
    code = ("import os, sys, time; sys.path.insert(0, %r); "
            "from provision.engine_api.sessions import SocketForwarder; f = SocketForwarder(None); "
            "print(f.dir, flush=True); time.sleep(60)" % REPO)
    env = dict(os.environ, TMPDIR=str(tmp_path))
    killed = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              env=env)
    live = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env=env)
    try:
        dead_dir = killed.stdout.readline().strip()
        live_dir = live.stdout.readline().strip()
        assert stat.S_IMODE(os.stat(dead_dir).st_mode) == 0o700
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        assert os.path.isdir(dead_dir)              # atexit never ran
        from provision.engine_api.sessions import remove_dead_forwarder_dirs
        # a deep $TMPDIR cannot hold a unix socket path: the folders then go to /tmp
        from provision.engine_api.transport import DIR_PREFIX
        fits = len(os.path.join(str(tmp_path), f"{DIR_PREFIX}4194304-xxxxxxxx",
                                "docker.sock")) <= 107
        assert os.path.dirname(dead_dir) == (str(tmp_path) if fits else "/tmp")
        assert dead_dir in remove_dead_forwarder_dirs(os.path.dirname(dead_dir))
        assert not os.path.exists(dead_dir) and os.path.isdir(live_dir)
    finally:
        live.kill()
        live.wait()


def test_get_docker_script_goes_to_a_private_folder(tmp_path):
    """Run the install command with stand-ins for curl and sh: the script lands in a fresh
    0700 folder (not a fixed /tmp path), runs from there, and the folder is gone after."""
    from provision.engine.install import GET_DOCKER_INSTALL
    assert "/tmp/get-docker.sh" not in GET_DOCKER_INSTALL
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # the stand-in "downloads" a script that reports where it runs from and that folder's mode
    script = (f'stat -c %a "$(dirname "$0")" > {tmp_path}/mode; echo "$0" > {tmp_path}/where\n')
    (bin_dir / "curl").write_text("#!/bin/sh\n" f"cat > \"$4\" <<'EOF'\n{script}EOF\n")
    (bin_dir / "curl").chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", TMPDIR=str(tmp_path / "t"))
    os.mkdir(tmp_path / "t")
    subprocess.run(["sh", "-c", GET_DOCKER_INSTALL], env=env, check=True)
    where = (tmp_path / "where").read_text().strip()
    assert (tmp_path / "mode").read_text().strip() == "700"
    assert where.startswith(str(tmp_path / "t") + "/") and not os.path.exists(where)
    assert os.listdir(tmp_path / "t") == []


def test_lab_ls_json_names_the_lab(monkeypatch, capsys):
    import argparse
    from types import SimpleNamespace

    import cli
    from provision.hosts.lab import lab as lab_mod
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"

    class FakeLab:
        vm, accel = False, None

        def __init__(self, name):
            self.name = name

        def hosts(self):
            return [SimpleNamespace(name=f"{self.name}-1", public_address="198.18.1.2",
                                    private_address="198.19.1.2", user="root",
                                    key_path="/k", host_key=key)]
    monkeypatch.setattr(lab_mod, "Lab", FakeLab)
    monkeypatch.setattr(lab_mod, "list_labs", lambda: ["rel-a", "rel-b"])
    assert cli.cmd_lab_ls(argparse.Namespace(name=None, json=True)) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["lab"], r["name"]) for r in rows] == [("rel-a", "rel-a-1"), ("rel-b", "rel-b-1")]
    assert {r["kind"] for r in rows} == {"netns"}


def test_cluster_help_text_says_how_the_cluster_is_found():
    for command in ("deploy", "redeploy", "plan", "rollback", "rm"):
        r = run_cli(command, "--help")
        assert "lead" not in r.stdout
        assert "SWARMSMITH_CLUSTER" in r.stdout, (command, r.stdout)
