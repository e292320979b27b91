"""`swarmsmith config` prints what `docker stack config` prints, text for text, so the two
can be diffed: Go durations, memory in bytes, env_file as written, the names the CLI
resolves for external objects, key order and quoting of go yaml v3.

The expected texts in tests/fixtures/stacks/config/expected/ were printed by the Docker CLI
(28.2) for the same files, with the fixture folder replaced by @WD@.  When a docker CLI with
`stack config` is on this machine, test_recorded_output_is_what_the_cli_prints checks them
against it again (SWARMSMITH_RECORD_CONFIG=1 rewrites them from it)."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from stacks.compose.config_view import config_document
from stacks.compose.loader import load
from stacks.compose.yaml_source import dump_like_go
from tests.conftest import REPO, run_cli


def render_config(compose) -> str:
    """What `swarmsmith config` prints for a loaded stack."""
    return dump_like_go(config_document(compose))


STACKS = os.path.join(REPO, "tests", "fixtures", "stacks")
EXPECTED = os.path.join(STACKS, "config", "expected")
FILES = [os.path.join(STACKS, "config", "formats.yml")] + [
    os.path.join(STACKS, "corpus", f"{n}.yml") for n in ("monitoring", "proxy", "app", "agents", "paths")]
ENV = {"HOME": "/root"}        # nothing else: the corpus' ${VAR:-default}s take their defaults


def expected_path(path: str) -> str:
    return os.path.join(EXPECTED, os.path.basename(path))


def ours(path: str) -> str:
    return render_config(load([path], environ=ENV))


def cli_with_stack_config() -> str | None:
    for docker in filter(None, [shutil.which("docker"), "/usr/local/bin/docker"]):
        try:
            probe = subprocess.run([docker, "stack", "config", "--help"], capture_output=True,
                                   timeout=20, env={**ENV, "PATH": os.environ["PATH"]})
        except (OSError, subprocess.TimeoutExpired):
            continue
        if probe.returncode == 0:
            return docker
    return None


@pytest.mark.parametrize("path", FILES, ids=os.path.basename)
def test_config_prints_what_docker_stack_config_prints(path):
    with open(expected_path(path)) as f:
        want = f.read().replace("@WD@", os.path.dirname(path))
    assert ours(path) == want


@pytest.mark.parametrize("path", FILES, ids=os.path.basename)
def test_recorded_output_is_what_the_cli_prints(path):
    docker = cli_with_stack_config()
    if docker is None:
        pytest.skip("no docker CLI with `stack config` here (the Debian 20.10 one has none)")
    proc = subprocess.run([docker, "stack", "config", "-c", os.path.basename(path)],
                          cwd=os.path.dirname(path), capture_output=True, text=True,
                          timeout=60, env={**ENV, "PATH": os.environ["PATH"]})
    assert proc.returncode == 0, proc.stderr
    recorded = proc.stdout.replace(os.path.dirname(path), "@WD@")
    if os.environ.get("SWARMSMITH_RECORD_CONFIG") == "1":
        with open(expected_path(path), "w") as f:
            f.write(recorded)
    with open(expected_path(path)) as f:
        assert f.read() == recorded
    assert ours(path) == proc.stdout


def test_values_in_go_form(tmp_path):
    (tmp_path / "s.env").write_text("A=1\n")
    (tmp_path / "stack.yml").write_text(
        'version: "3.9"\nservices:\n  a:\n    image: busybox:1\n    env_file: s.env\n'
        '    stop_grace_period: 120s\n    deploy:\n      resources:\n        limits:\n'
        '          memory: 1.5g\n      restart_policy:\n        window: 90s\n'
        '      update_config:\n        delay: 0s\n')
    text = render_config(load([str(tmp_path / "stack.yml")], environ={}))
    assert "stop_grace_period: 2m0s" in text and "window: 1m30s" in text
    assert 'memory: "1610612736"' in text
    assert "env_file:\n      - s.env\n" in text          # as written, not made absolute
    assert "delay" not in text                           # a zero Go duration is left out


def test_external_objects_carry_the_resolved_name(tmp_path):
    (tmp_path / "stack.yml").write_text(
        'version: "3.9"\nservices:\n  a:\n    image: busybox:1\n    networks: [pub, old]\n'
        'networks:\n  pub: {external: true}\n  old: {external: {name: legacy}}\n'
        'volumes:\n  v: {external: true}\nsecrets:\n  s: {external: true, name: real}\n'
        'configs:\n  c: {external: true}\n')
    text = render_config(load([str(tmp_path / "stack.yml")], environ={}))
    for block in ("  pub:\n    name: pub\n    external: true\n",
                  "  old:\n    name: legacy\n    external: true\n",
                  "  v:\n    name: v\n    external: true\n",
                  "  s:\n    name: real\n    external: true\n",
                  "  c:\n    name: c\n    external: true\n"):
        assert block in text, text


def test_keys_the_cli_has_no_field_for_are_still_printed(tmp_path):
    (tmp_path / "stack.yml").write_text('version: "3.13"\nservices:\n  a:\n    image: busybox:1\n'
                                        '    oom_score_adj: 100\n')
    assert "oom_score_adj: 100" in render_config(load([str(tmp_path / "stack.yml")],
                                                      environ={}))


def test_config_command_output(tmp_path):
    path = os.path.join(STACKS, "corpus", "agents.yml")
    proc = run_cli("config", "-c", path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ours(path)
