"""The live table in a real terminal (tmux), driven by a scripted swarm: the screen is read
while a stop-first rolling update of 4 replicas plays, in a few seconds and without a lab.
(tests/test_rollout_view_lab.py reads the same screen during a real update.)"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time

from tests.conftest import REPO, TERMINAL_ENV

# the watcher with the terminal's renderer, real clock and sleep, polls every 0.05 s: each
# poll is one step of the scripted update
PROGRAM = """
import sys, time
from stacks.watch.render import progress_renderer
from stacks.watch.watcher import WatchPolicy, watch_stack
from tests.fakes.swarm import STACK, FakeSwarm
from tests.test_watch_waiting_units import rolling_update_script
policy = WatchPolicy(timeout=60, poll_min=0.05, poll_max=0.05, poll_max_updating=0.05,
                     poll_max_early=0.05)
with progress_renderer(sys.stderr) as show:
    report = watch_stack(FakeSwarm(rolling_update_script(grace=6, delay=6, monitor=4)),
                         STACK, policy=policy, on_progress=show)
print("EXIT", report.exit_code)
"""


def _screen(sock: str) -> str:
    return subprocess.run(["tmux", "-L", sock, "capture-pane", "-p", "-t", "view"],
                          capture_output=True, text=True, timeout=10).stdout


def test_live_table_in_a_terminal_shows_bar_counts_and_the_wait(tmp_path):
    assert shutil.which("tmux"), "tmux missing: scripts/setup.sh installs it"
    prog = tmp_path / "view.py"
    prog.write_text(PROGRAM)
    sock = f"swsm-view-{os.getpid()}"
    subprocess.run(["tmux", "-L", sock, "-u", "new-session", "-d", "-s", "view", "-x", "140",
                    "-y", "30", f"cd {REPO} && {sys.executable} {prog}; sleep 60"],
                   check=True, timeout=20,
                   env={**TERMINAL_ENV, "LANG": "C.UTF-8", "PYTHONPATH": REPO})
    rows, screen = [], ""
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            screen = _screen(sock)
            rows += [ln for ln in screen.splitlines() if ln.startswith("st_web ")]
            if "EXIT" in screen:
                break
            time.sleep(0.05)
        assert "EXIT 0" in screen, screen
        header = next(ln for ln in screen.splitlines() if ln.startswith("service "))
        assert header.split() == ["service", "updated", "running", "phase", "time", "now"]
        # during the update: a bar that is part full, the updated and the running count, the
        # phase, the time and what swarm waits for
        mid = [r for r in rows if re.search(
            r"^st_web +\u2501+\u2500+ [123]/4 +[34]/4 +updating +\d+\.\d s +waiting for ", r)]
        assert mid, "\n".join(dict.fromkeys(rows))
        words = " ".join(mid)
        assert "stopping (grace period 6s, " in words and "update delay 6s (" in words
        # at the end the bar is full and the outcome replaces the phase
        assert re.search(r"^st_web +\u2501{16} 4/4 +4/4 +converged +\d+\.\d s", rows[-1]), rows[-1]
    finally:
        subprocess.run(["tmux", "-L", sock, "kill-server"], timeout=20)
