"""The tutorial app end to end on a lab swarm (what scripts/demo.sh does): images built from
Debian packages (cached across the run) and pushed by `deploy --push-images`, the stack
deployed, values put in redis, the API answering through haproxy, and a rolling update to
VERSION=2.0 under a request loop that must see no failed request.

One module-scoped cluster `imgtut` (1 manager, 2 workers); `swarmsmith down` at the end.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.lab

CLUSTER = "imgtut"
TUTORIAL = os.path.join(REPO, "examples", "tutorial")


def cli(*args, env=None, timeout=900):
    return subprocess.run([sys.executable, os.path.join(REPO, "cli.py"), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    d = tmp_path_factory.mktemp(CLUSTER)
    path = d / "swarmsmith.yml"
    path.write_text(f"name: {CLUSTER}\nprovider: lab\nmanagers: 1\nworkers: 2\n")
    try:
        up = cli("up", str(path))
        assert up.returncode == 0, up.stderr + up.stdout
        from provision.engine_api.sessions import inventory_hosts
        yield str(path), inventory_hosts(str(path), "manager")[0].public_address
    finally:
        down = cli("down", str(path))
        assert down.returncode == 0, down.stderr


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=3) as r:
        return json.loads(r.read())


def wait_answer(url: str, want: dict, seconds: float = 60) -> dict:
    deadline, last = time.monotonic() + seconds, None
    while time.monotonic() < deadline:
        try:
            last = get(url)
            if all(last.get(k) == v for k, v in want.items()):
                return last
        except Exception as e:     # haproxy still resolving tasks, redis starting
            last = repr(e)
        time.sleep(0.5)
    raise AssertionError(f"{url} never answered {want}; last: {last}")


def test_tutorial_deploy_seed_answer_and_rolling_update_without_failures(lab):
    path, manager = lab
    stack = os.path.join(TUTORIAL, "stack.yml")
    # the images are only here (the cache): the image check finds them missing on every
    # node and --push-images puts them there before the deploy goes on
    p = cli("deploy", "--cluster", path, "-c", stack, "--push-images", "--push-from",
            os.path.join(TUTORIAL, "images.yml"), "--timeout", "180", "tutorial")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "pushing swarmsmith/dummy-api:1, swarmsmith/haproxy:2.6, swarmsmith/redis:7" in p.stderr
    p = cli("images", "push", "--cluster", path, "--file", _archive(), "--json")
    assert p.returncode == 0 and json.loads(p.stdout)["changes"] == []      # all there now

    seed = os.path.join(TUTORIAL, "seed.yml")
    env = {"FIRST_NAME": "Grace", "LAST_NAME": "Hopper", "ENVIRONMENT": "lab-test"}
    p = cli("deploy", "--cluster", path, "-c", seed, "--timeout", "120", "tutorial-seed", env=env)
    assert p.returncode == 0, p.stdout + p.stderr

    url = f"http://{manager}:8080/"
    answer = wait_answer(url, {"first-name": "Grace", "app-version": "1.0"})
    assert answer == {"app-version": "1.0", "first-name": "Grace", "last-name": "Hopper",
                      "environment": "lab-test"}

    loop = subprocess.run(
        [sys.executable, os.path.join(REPO, "scripts", "request_loop.py"), url,
         "--max-seconds", "240", "--json", "--", sys.executable, os.path.join(REPO, "cli.py"),
         "deploy", "--cluster", path, "-c", stack, "--timeout", "180", "tutorial"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "VERSION": "2.0"},
        cwd=REPO)
    report = json.loads(loop.stdout.strip().splitlines()[-1])
    assert report["command_exit"] == 0, loop.stderr
    assert report["failed"] == 0, report
    assert report["requests"] > 20 and report["versions"].get("2.0"), report
    for _ in range(30):
        assert get(url)["app-version"] == "2.0"


def _archive() -> str:
    from provision.images.debian import build
    return build(os.path.join(TUTORIAL, "images.yml")).archive
