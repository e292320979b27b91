"""The engine's stop and start commands, run for real by /bin/sh against a stand-in dockerd
that behaves as dockerd does when it shuts down: it removes its pid file first and exits a
moment later. A stop returns only once the process is gone, and a start after an engine that
is still exiting starts a new one (Debian's init script, asked to start while the process it
recorded still runs, starts nothing)."""
from __future__ import annotations

import os
import subprocess
import time

import pytest

from provision.engine import install as engine

LINGER = 1.0      # seconds the stand-in runs on after removing its pid file

# removes its pid file on TERM, then lingers, as dockerd does while its containerd connection
# is retried; `exec` keeps one process, so the pid file names the process that lingers
FAKE_DOCKERD = """#!/bin/sh
echo $$ >> "$DIR/started"
exec python3 -c '
import os, signal, sys, time
def term(*_):
    os.unlink(os.environ["PIDFILE"]); time.sleep(float(os.environ["LINGER"])); sys.exit(0)
signal.signal(signal.SIGTERM, term)
with open(os.environ["PIDFILE"], "w") as f:     # once TERM is handled
    f.write(str(os.getpid()))
while True: time.sleep(0.05)
'
"""

# Debian's init script, reduced to what matters: `start` starts nothing while the process it
# recorded runs; `stop` waits up to 10 s for that process
FAKE_INIT = """#!/bin/sh
running() { p=$(cat "$SSD" 2>/dev/null) && [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }
case "$1" in
  start) running && exit 0
         "$DIR/dockerd" </dev/null >/dev/null 2>&1 &
         echo $! > "$SSD" ;;
  stop)  p=$(cat "$SSD" 2>/dev/null); [ -n "$p" ] && kill "$p" 2>/dev/null; rm -f "$SSD"
         i=0; while kill -0 "$p" 2>/dev/null && [ $i -lt 100 ]; do i=$((i+1)); sleep 0.1; done ;;
  restart) "$0" stop; "$0" start ;;
esac
"""


class Host:
    """A folder standing in for a host's /var/run and /etc/init.d."""

    def __init__(self, d):
        self.dir = d
        for name, text in (("dockerd", FAKE_DOCKERD), ("init", FAKE_INIT)):
            (d / name).write_text(text)
            (d / name).chmod(0o755)
        self.pidfile = d / "docker.pid"
        self.env = dict(os.environ, DIR=str(d), PIDFILE=str(self.pidfile),
                        SSD=str(d / "docker-ssd.pid"), LINGER=str(LINGER))

    def run(self, cmd) -> None:
        script = (cmd.argv[-1].replace(engine.SSD_PIDFILE, self.env["SSD"])
                  .replace(engine.PIDFILE, str(self.pidfile))
                  .replace("/etc/init.d/docker", str(self.dir / "init"))
                  .replace("setsid -f dockerd", f"{self.dir / 'dockerd'} &"))
        subprocess.run(["/bin/sh", "-c", script], env=self.env, check=True, timeout=30,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def pids(self) -> list[int]:
        f = self.dir / "started"
        return [int(p) for p in f.read_text().split()] if f.exists() else []

    def wait_pidfile(self, present: bool = True) -> None:
        for _ in range(200):
            if self.pidfile.exists() == present:
                return
            time.sleep(0.05)
        raise AssertionError(f"the stand-in dockerd's pid file: still {'absent' if present else 'there'}")


@pytest.fixture
def host(tmp_path):
    h = Host(tmp_path)
    yield h
    for p in h.pids():
        try:
            os.kill(p, 9)
        except ProcessLookupError:
            pass


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a child of this test that exited and is not yet reaped counts as gone
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ", 1)[1][0] != "Z"


@pytest.mark.parametrize("facts", [{"initscript": True}, {}], ids=["init script", "dockerd directly"])
def test_a_stop_returns_only_once_the_engine_process_is_gone(host, facts):
    host.run(engine._start(facts))
    host.wait_pidfile()
    [pid] = host.pids()
    host.run(engine.stop_command(facts))
    assert not alive(pid), "stop returned while the engine still ran"


@pytest.mark.parametrize("facts", [{"initscript": True}, {}], ids=["init script", "dockerd directly"])
def test_a_restart_starts_the_new_engine_after_the_old_one_exited(host, facts):
    host.run(engine._start(facts))
    host.wait_pidfile()
    host.run(engine._restart(facts))
    host.wait_pidfile()
    old, new = host.pids()
    assert not alive(old) and alive(new)


def test_a_start_while_the_old_engine_is_still_exiting_starts_a_new_one(host):
    host.run(engine._start({"initscript": True}))
    host.wait_pidfile()
    [old] = host.pids()
    # stopped behind swarmsmith's back (a crash, an operator's kill): the pid file goes first
    os.kill(old, 15)
    host.wait_pidfile(present=False)
    assert alive(old)       # exiting, as dockerd does for a while
    host.run(engine._start({"initscript": True}))
    host.wait_pidfile()
    assert len(host.pids()) == 2 and alive(host.pids()[1]) and not alive(old)
