"""The rollout view on a real lab swarm: the log lines and the live table a person reads.

One module-scoped cluster `rov1` (1 manager, 3 workers, busybox image loaded); `swarmsmith
down` always runs at the end.  The service: 4 replicas, one host-mode port each (so one task
per node), endpoint_mode dnsrr (no IP_VS here), a stop-first update one task at a time with a
delay and a short grace period, so every kind of wait shows.  Needs root; skips only without
it.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

from tests.conftest import REPO, TERMINAL_ENV, run_cli
from tests.lab_cluster import brought_up

pytestmark = pytest.mark.lab

CLUSTER = "rov1"
STACK = "rv"
APP = """
version: "3.8"
services:
  web:
    image: swarmsmith/busybox:1
    command: ["sleep", "100000"]
    environment: {{RELEASE: "{release}"}}
    stop_grace_period: 3s
    ports:
      - {{target: 8080, published: 8080, mode: host}}
    deploy:
      replicas: 4
      endpoint_mode: dnsrr
      update_config: {{parallelism: 1, order: stop-first, delay: 2s, monitor: 2s,
                      failure_action: rollback}}
"""
COUNTS = re.compile(r"updated (\d)/4, running (\d)/4")
WAITS = re.compile(r"waiting for (task rv_web\.\d stopping \(grace period 3s|update delay 2s"
                   r"|monitoring task rv_web\.\d)")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    d = tmp_path_factory.mktemp(CLUSTER)
    path = d / "swarmsmith.yml"
    path.write_text(f"name: {CLUSTER}\nprovider: lab\nmanagers: 1\nworkers: 3\n")
    with brought_up(path, up_timeout=600, down_timeout=900):
        yield Lab(str(path), d)


class Lab:
    def __init__(self, path: str, dir_):
        self.path, self.dir = path, dir_

    def compose(self, release: int) -> str:
        f = self.dir / "app.yml"
        f.write_text(textwrap.dedent(APP.format(release=release)))
        return str(f)

    def deploy_args(self, release: int) -> list[str]:
        return ["deploy", "--cluster", self.path, "-c", self.compose(release), "--timeout",
                "240", STACK]


@pytest.fixture(scope="module")
def app(lab):
    """The stack at its first release: each test then rolls it to a release of its own."""
    first = run_cli(*lab.deploy_args(1))
    assert first.returncode == 0, first.stderr + first.stdout
    return lab


def test_log_lines_updated_rises_while_running_stays_and_the_wait_is_named(app):
    p = run_cli(*app.deploy_args(2), timeout=400)
    assert p.returncode == 0, p.stderr + p.stdout
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("[") and "rv_web:" in ln]
    print("\n".join(lines))            # shown with -s: what a CI log of this update reads
    counts = [tuple(map(int, m.groups())) for m in map(COUNTS.search, lines) if m]
    assert counts, p.stderr
    updated = [u for u, _ in counts]
    assert updated[0] == 0 and updated[-1] == 4, p.stderr
    assert updated == sorted(updated), p.stderr            # never goes back
    assert min(r for _, r in counts) >= 3, p.stderr        # stop-first, one at a time: 3 serve
    waits = [ln for ln in lines if WAITS.search(ln)]
    assert waits, p.stderr
    # stop-first: each slot's old task is seen stopping before its new task starts (the new
    # one is also pending on the port meanwhile; the stop is named, being the cause)
    stopped = {m.group(1) for m in (re.search(r"task (rv_web\.\d) stopping \(grace period 3s",
                                              ln) for ln in waits) if m}
    assert len(stopped) >= 3, p.stderr
    # the last line and the summary give the same time
    done = re.search(r"-> converged after (\d+\.\d) s", lines[-1])
    assert done, lines[-1]
    assert f"stack {STACK}: exit 0 after {done.group(1)} s" in p.stdout


def _screen(sock: str) -> str:
    return subprocess.run(["tmux", "-L", sock, "capture-pane", "-p", "-t", "view"],
                          capture_output=True, text=True, timeout=10).stdout


def test_live_view_in_a_terminal_shows_bar_counts_and_the_wait(app):
    """The deploy runs in a real terminal (tmux); the screen is read while the update rolls."""
    assert shutil.which("tmux"), "tmux missing: scripts/setup.sh installs it"
    sock = f"swsm-{CLUSTER}-{os.getpid()}"
    command = " ".join([sys.executable, os.path.join(REPO, "cli.py"), *app.deploy_args(3)])
    # the pane outlives the deploy so the final screen and the exit code can be read
    subprocess.run(["tmux", "-L", sock, "-u", "new-session", "-d", "-s", "view", "-x", "150",
                    "-y", "40", f"cd {REPO} && {command}; echo EXIT=$?; sleep 600"],
                   check=True, timeout=20, env={**TERMINAL_ENV, "LANG": "C.UTF-8"})
    seen, screen = [], ""
    try:
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline:
            screen = _screen(sock)
            row = next((ln for ln in screen.splitlines() if ln.startswith("rv_web ")), "")
            if row:
                seen.append(row)
            if "EXIT=" in screen:
                break
            time.sleep(0.3)
        during = [r for r in seen if re.search(r"[\u2501\u2500]{16} [0-3]/4 +[34]/4 ", r)
                  and "waiting for" in r]
        assert during, "\n".join(seen[-20:]) + "\n---\n" + screen
        row = during[len(during) // 2]
        print("\n".join(dict.fromkeys(seen)))     # shown with -s: the rows the screen showed
        assert re.search(r"\u2501*\u2500+ [0-3]/4", row)                 # the bar, not full
        assert re.search(r"updating +\d+\.\d s +waiting for (task rv_web\.\d (stopping|"
                         r"preparing|starting|pending|assigned|accepted|ready)|update delay 2s"
                         r"|monitoring task|swarm to)", row), row
        assert "EXIT=0" in screen, screen
        final = next(ln for ln in screen.splitlines() if ln.startswith("rv_web "))
        assert re.search("\u2501{16} 4/4 +4/4 +converged", final), final
    finally:
        subprocess.run(["tmux", "-L", sock, "kill-server"], timeout=20)
