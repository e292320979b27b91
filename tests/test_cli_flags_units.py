"""The command line's flags: every command that talks to a cluster takes the same connection
flags (before or after the subcommand), every flag says what it does in --help, and every
message or doc that names a command's flag names one that exists."""
from __future__ import annotations

import argparse
import glob
import os
import re
import subprocess
import sys

import pytest

import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# these reach no cluster through SSH: the lab, a compose file, and the agent's own loop inside
# the swarm (its engine's socket, settings from its service's environment)
LOCAL_ONLY = {("lab", "up"), ("lab", "down"), ("lab", "ls"), ("config",), ("agent", "run")}
CONNECTION_FLAGS = {"--cluster", "--accept-new-host-keys"}


def _children(p: argparse.ArgumentParser) -> dict:
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            return a.choices
    return {}


def _commands(p=None, path=()):
    """(path, parser) of every runnable subcommand (the leaves)."""
    p = p or cli.build_parser()
    children = _children(p)
    if not children:
        yield path, p
    for name, child in children.items():
        yield from _commands(child, path + (name,))


def _flags(p) -> set[str]:
    return {o for a in p._actions for o in a.option_strings}


def test_every_command_that_reaches_a_cluster_takes_the_connection_flags():
    leaves = dict(_commands())
    assert len(leaves) > 35      # the walk found the nested commands (node rm, ca rotate, ...)
    missing = {" ".join(path): sorted(CONNECTION_FLAGS - _flags(p))
               for path, p in leaves.items() if path not in LOCAL_ONLY
               and not CONNECTION_FLAGS <= _flags(p)}
    assert missing == {}
    # one shared definition: the very same argparse actions everywhere
    shared = {id(a) for a in cli._connection()._actions}
    for path, p in leaves.items():
        if path not in LOCAL_ONLY:
            ids = {id(a) for a in p._actions if set(a.option_strings) & CONNECTION_FLAGS}
            assert ids <= shared, path


@pytest.mark.parametrize("path", [p for p, _ in _commands() if p not in LOCAL_ONLY],
                         ids=lambda p: "-".join(p))
def test_connection_flags_parse_before_and_after_the_subcommand(path):
    parser = cli.build_parser()
    positionals = {"node": ["NODE"], "restore": ["F", "--to", "m1"], "scale": ["web=1"],
                   "ps": ["web"], "logs": ["web"], "autolock": ["on"], "label": ["n", "a=b"],
                   "deploy": ["-c", "f", "st"], "redeploy": ["-c", "f", "st"], "unlock": ["st"],
                   "rollback": ["st"], "rm": ["st"], "build": ["i.yml"]}
    rest = positionals.get(path[-1], [])
    if path[0] == "node" and path[-1] not in ("ls",):
        rest = ["n", "a=b"] if path[-1] == "label" else ["n"]
    after = parser.parse_args([*path, "--cluster", "c.yml", "--accept-new-host-keys", *rest])
    assert (after.cluster, after.accept_new_host_keys) == ("c.yml", True)
    before = parser.parse_args(["--cluster", "b.yml", "--accept-new-host-keys", *path, *rest])
    assert (before.cluster, before.accept_new_host_keys) == ("b.yml", True)
    neither = parser.parse_args([*path, *rest])
    assert (neither.cluster, neither.accept_new_host_keys) == (None, False)
    both = parser.parse_args(["--cluster", "b.yml", *path, "--cluster", "a.yml", *rest])
    assert both.cluster == "a.yml"        # the subcommand's own wins


def test_every_flag_and_argument_has_a_description():
    bare = []
    for path, p in _commands():
        for a in p._actions:
            if isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            if not a.help or a.help == argparse.SUPPRESS:
                bare.append(f"{' '.join(path)} {'/'.join(a.option_strings) or a.dest}")
    assert bare == []


def test_every_help_page_prints():
    for path, _ in _commands():
        out = subprocess.run([sys.executable, "cli.py", *path, "--help"], cwd=ROOT,
                             capture_output=True, text=True)
        assert out.returncode == 0, (path, out.stderr)
        assert "--cluster" in out.stdout or path in LOCAL_ONLY


def _sources() -> list[str]:
    return ([f for d in ("provision", "stacks", "inventory")
             for f in glob.glob(os.path.join(ROOT, d, "**", "*.py"), recursive=True)]
            + [os.path.join(ROOT, "cli.py"), os.path.join(ROOT, "README.md")]
            + glob.glob(os.path.join(ROOT, "docs", "*.md")))


# `swarmsmith node rm --force NODE`, `swarmsmith up --accept-host-key {name}`: command words,
# then flags (with a value), placeholders, file names
_COMMAND = re.compile(r"swarmsmith((?:[ \t]+(?:[a-z][a-z0-9-]*|--[a-z][a-z0-9-]*(?:[ =][^\s`'\")]+)?"
                      r"|[A-Z][A-Z_.]*(?:=[A-Z0-9]+)?|[\w./-]+\.ya?ml|-[a-z] [^\s`]+))+)")
# `pass --X`, `unless --X`: a flag named on its own in a message
_NAMED = re.compile(r"\b(?:pass|with|use|add|give|unless|without|or|needs)[ \t]+(--[a-z][a-z0-9-]+)")


def _bad_command_flags(text: str, root) -> list[str]:
    bad = []
    for m in _COMMAND.finditer(text):
        p, path = root, []
        for w in m.group(1).split():
            if not w.startswith("-") and w in _children(p):
                p = _children(p)[w]
                path.append(w)
            elif w.startswith("--") and w.split("=")[0] not in _flags(p) | _flags(root):
                bad.append(f"swarmsmith {' '.join(path)} {w.split('=')[0]}")
    return bad


def test_the_flag_check_finds_a_flag_that_does_not_exist():
    root = cli.build_parser()
    assert _bad_command_flags("run `swarmsmith node ls --accept-new-host-keys`", root) == []
    assert _bad_command_flags("`swarmsmith ps --bogus web`", root) == ["swarmsmith ps --bogus"]
    assert _bad_command_flags("`swarmsmith node rm --to x`", root) == ["swarmsmith node rm --to"]


def test_every_message_and_doc_names_flags_that_exist():
    root = cli.build_parser()
    every = set().union(*(_flags(p) for _, p in _commands())) | _flags(root)
    bad, checked = [], 0
    for path in _sources():
        with open(path) as f:
            text = f.read()
        where = os.path.relpath(path, ROOT)
        bad += [f"{where}: {b}" for b in _bad_command_flags(text, root)]
        checked += sum("--" in m.group(1) for m in _COMMAND.finditer(text))
        if path.endswith(".py"):
            bad += [f"{where}: {fl}" for fl in _NAMED.findall(text) if fl not in every]
    assert checked > 30 and bad == []


def test_version_comes_from_the_package_metadata():
    from importlib import metadata
    out = subprocess.run([sys.executable, "cli.py", "--version"], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == \
        f"swarmsmith {metadata.version('swarmsmith')}"


def _static(tmp_path) -> str:
    key = tmp_path / "id"
    key.write_text("x")
    path = tmp_path / "c.yml"
    path.write_text(f"name: fl0\nprovider: static\nssh: {{key: {key}}}\nstatic:\n  hosts:\n"
                    "    - {name: m1, address: 10.0.0.1, role: manager}\n")
    return str(path)


@pytest.mark.parametrize("argv", [
    ["ps", "web"], ["node", "ls"], ["tokens", "rotate"], ["ca", "rotate"], ["autolock", "on"],
    ["unlock-key"], ["scale", "--detach", "web=2"], ["logs", "web"]])
def test_accept_new_host_keys_reaches_the_ssh_session(tmp_path, monkeypatch, capsys, argv):
    """The flag is not only parsed: the session to an unpinned host is opened without
    requiring a pin, and is refused without the flag."""
    from provision.engine_api import access as access_mod
    from provision.base.errors import UnreachableError
    seen = []

    class Session:
        def __init__(self, host, require_pin=False, **kw):
            seen.append(require_pin)
            self.host = host

        def connect(self):
            raise UnreachableError("no route (test)", host=self.host.name)

        def close(self):
            pass
    monkeypatch.setattr(access_mod, "Session", Session)
    monkeypatch.setattr(access_mod, "_CACHE", {})
    path = _static(tmp_path)
    assert cli.main([*argv, "--cluster", path]) == 3
    assert cli.main(["--accept-new-host-keys", "--cluster", path, *argv]) == 3
    monkeypatch.setattr(access_mod, "_CACHE", {})
    assert cli.main([*argv, "--cluster", path]) == 3
    assert seen == [True, False, True]
    assert "10.0.0.1" not in capsys.readouterr().out
