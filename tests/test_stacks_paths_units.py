"""Strings swarm stores as written stay as `docker stack deploy` sends them: bind sources
are made absolute only when relative (joined and cleaned like Go's filepath.Join), `~` is
replaced by $HOME as text, mount targets are never touched.  The expected values are what
`docker stack config` printed for the same lines (and what the 20.10 `docker stack deploy`
stored; the lab test checks that on a swarm)."""
from __future__ import annotations

import pytest

from stacks.specs.convert import convert
from stacks.compose.loader import load

CASES = [
    # (short volume syntax, expected Source, expected Target)
    ("/var/lib/docker/:/var/lib/docker:ro", "/var/lib/docker/", "/var/lib/docker"),
    ("/etc/:/host/etc/", "/etc/", "/host/etc/"),
    ("//double//slash/:/d", "//double//slash/", "/d"),
    ("/a/./b/:/ab", "/a/./b/", "/ab"),
    ("./data/:/data/", "{wd}/data", "/data/"),
    ("./x/../y//z:/y", "{wd}/y/z", "/y"),
    (".:/here", "{wd}", "/here"),
    ("..:/up", "{up}", "/up"),
    ("~/cache/:/cache", "/home/u/cache/", "/cache"),
    ("~:/home", "/home/u", "/home"),
    ("~foo/bar:/foo", "/home/ufoo/bar", "/foo"),   # text replacement, no user lookup
]


@pytest.mark.parametrize("line,source,target", CASES, ids=[c[0] for c in CASES])
def test_bind_source_and_target_kept_as_the_cli_sends_them(tmp_path, line, source, target):
    wd = tmp_path / "stack"
    wd.mkdir()
    f = wd / "stack.yml"
    f.write_text(f'version: "3.9"\nservices:\n  a:\n    image: busybox:1\n'
                 f'    volumes: ["{line}"]\n')
    c = load([str(f)], environ={"HOME": "/home/u"})
    mount = convert(c, "st").services["st_a"]["TaskTemplate"]["ContainerSpec"]["Mounts"][0]
    want = source.format(wd=str(wd), up=str(tmp_path))
    assert (mount["Type"], mount["Source"], mount["Target"]) == ("bind", want, target)


def test_long_syntax_and_named_volume_targets_kept(tmp_path):
    f = tmp_path / "stack.yml"
    f.write_text('version: "3.9"\nservices:\n  a:\n    image: busybox:1\n    volumes:\n'
                 '      - {type: bind, source: /srv/app/, target: /app/}\n'
                 '      - data:/var/data/\nvolumes:\n  data: {}\n')
    mounts = convert(load([str(f)], environ={}), "st").services["st_a"][
        "TaskTemplate"]["ContainerSpec"]["Mounts"]
    assert [(m["Source"], m["Target"]) for m in mounts] == [("/srv/app/", "/app/"),
                                                            ("st_data", "/var/data/")]


def test_secret_file_absolute_path_kept(tmp_path):
    (tmp_path / "s.txt").write_text("x")
    f = tmp_path / "stack.yml"
    f.write_text(f'version: "3.9"\nservices:\n  a:\n    image: busybox:1\n'
                 f'secrets:\n  s:\n    file: {tmp_path}//s.txt\n  r:\n    file: ./sub/../s.txt\n')
    m = load([str(f)], environ={}).model
    assert m["secrets"]["s"]["file"] == f"{tmp_path}//s.txt"
    assert m["secrets"]["r"]["file"] == f"{tmp_path}/s.txt"
