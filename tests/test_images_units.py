"""Units for image archives and `images push` decisions (no hosts)."""
from __future__ import annotations

import gzip
import io
import json
import os
import tarfile

import pytest

from provision.base.errors import InputError
from provision.images.archive import ImageConfig, read_images, write_archive
from provision.images.push import select_hosts
from provision.images.push import LOAD, PRESENT, TAG, decide, mismatches, parse_probe, \
    probe_command
from provision.base.hosts import Host
from provision.images.busybox import write_rootfs_tar


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory):
    p = tmp_path_factory.mktemp("rootfs") / "rootfs.tar"
    with open(p, "wb") as f:
        write_rootfs_tar(f)
    return str(p)


def test_written_archive_reads_back_with_stable_ids(rootfs, tmp_path):
    imgs = [ImageConfig("t/a:1", [rootfs], cmd=["sh"]),
            ImageConfig("t/b:1", [rootfs], cmd=["sh"], env=["X=1"])]
    a = write_archive(str(tmp_path / "one.tar"), imgs)
    b = write_archive(str(tmp_path / "two.tar"), imgs)
    assert a == b                                   # same inputs, same image IDs
    assert a[0].id != a[1].id
    assert read_images(str(tmp_path / "one.tar")) == a
    with tarfile.open(tmp_path / "one.tar") as tar:   # the shared layer is stored once
        assert sum(n.endswith("layer.tar") for n in tar.getnames()) == 1


def test_oci_layout_archive_ids_come_from_blob_names(tmp_path):
    import hashlib
    cfg = b'{"rootfs":{"type":"layers","diff_ids":[]}}'
    hexid = hashlib.sha256(cfg).hexdigest()
    path = tmp_path / "oci.tar"
    with tarfile.open(path, "w") as tar:
        for name, data in ((f"blobs/sha256/{hexid}", cfg),
                           ("manifest.json", json.dumps([{"Config": f"blobs/sha256/{hexid}",
                                                          "RepoTags": ["x:1"], "Layers": []}]
                                                        ).encode())):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tar.addfile(ti, io.BytesIO(data))
    [img] = read_images(str(path))
    assert img.id == f"sha256:{hexid}" and img.tags == ("x:1",)


@pytest.mark.parametrize("content,why", [
    (b"not a tar at all", "not a readable"),
    (None, "no manifest.json"),
])
def test_bad_archives_name_the_file(tmp_path, content, why):
    path = tmp_path / "bad.tar"
    if content is None:
        with tarfile.open(path, "w") as tar:
            ti = tarfile.TarInfo("hello")
            tar.addfile(ti, io.BytesIO(b""))
    else:
        path.write_bytes(content)
    with pytest.raises(InputError) as e:
        read_images(str(path))
    assert str(path) in str(e.value) and why in str(e.value)


def test_damaged_config_is_refused(rootfs, tmp_path):
    [img] = write_archive(str(tmp_path / "a.tar"), [ImageConfig("t/a:1", [rootfs])])
    hexid = img.id[7:]
    src, dst = tmp_path / "a.tar", tmp_path / "damaged.tar"
    with tarfile.open(src) as tin, tarfile.open(dst, "w") as tout:
        for m in tin.getmembers():
            data = tin.extractfile(m).read() if m.isfile() else b""
            if m.name == f"{hexid}.json":
                data = data.replace(b"amd64", b"arm64")
            m.size = len(data)
            tout.addfile(m, io.BytesIO(data))
    with pytest.raises(InputError, match="does not match its digest"):
        read_images(str(dst))


def test_gzipped_archive_is_read(rootfs, tmp_path):
    [img] = write_archive(str(tmp_path / "a.tar"), [ImageConfig("t/a:1", [rootfs])])
    gz = tmp_path / "a.tar.gz"
    gz.write_bytes(gzip.compress((tmp_path / "a.tar").read_bytes()))
    assert read_images(str(gz)) == [img]


def test_probe_and_decisions():
    from provision.images.archive import ArchiveImage
    a = ArchiveImage("sha256:" + "a" * 64, ("t/a:1",))
    cmd = probe_command([a])
    assert cmd.argv[-2:] == ("t/a:1", a.id)
    seen = parse_probe(f"t/a:1 {a.id}\n{a.id} {a.id}\n")
    assert decide([a], seen) == PRESENT and not mismatches([a], seen)
    seen = parse_probe(f"t/a:1 -\n{a.id} {a.id}\n")
    assert decide([a], seen) == TAG
    other = "sha256:" + "b" * 64
    seen = parse_probe(f"t/a:1 {other}\n{a.id} -\n")
    assert decide([a], seen) == LOAD
    assert mismatches([a], seen) == [f"t/a:1 is {other}, expected {a.id}"]
    assert decide([a], {}) == LOAD


def test_select_hosts():
    hosts = [Host("m1", "1", role="manager"), Host("w1", "2", role="worker"),
             Host("w2", "3", role="worker")]
    names = lambda hs: [h.name for h in hs]   # noqa: E731
    assert names(select_hosts(hosts, [])) == ["m1", "w1", "w2"]
    assert names(select_hosts(hosts, ["workers"])) == ["w1", "w2"]
    assert names(select_hosts(hosts, ["managers", "w2"])) == ["m1", "w2"]
    with pytest.raises(InputError, match="no node named w9"):
        select_hosts(hosts, ["w9"])


# --- image files (images build) ------------------------------------------------------------

def _imagefile(tmp_path, text: str) -> str:
    (tmp_path / "app.py").write_text("print('hi')\n")
    p = tmp_path / "images.yml"
    p.write_text(text)
    return str(p)


@pytest.mark.parametrize("text,where", [
    ("packages: [python3]\n", "images"),
    ("packages: [Bad_Name]\nimages: {a/b:1: {}}\n", "packages"),
    ("images: {A/b:1: {}}\n", "images.A/b:1"),
    ("images: {a/b:1: {cmd: run}}\n", "images.a/b:1.cmd"),
    ("images: {a/b:1: {files: {nosuch.py: /app/x.py}}}\n", "images.a/b:1.files.nosuch.py"),
    ("images: {a/b:1: {files: {app.py: app/x.py}}}\n", "images.a/b:1.files.app.py"),
    ("images: {a/b:1: {bogus: 1}}\n", "images.a/b:1.bogus"),
    ("suite: [x]\nimages: {a/b:1: {}}\n", "suite"),
    ("images: {a/b:1: {}}\nextra: 1\n", "extra"),
    (": : :\n", "not valid YAML"),
])
def test_image_file_errors_name_file_and_key(tmp_path, text, where):
    from provision.images.debian import load
    path = _imagefile(tmp_path, text)
    with pytest.raises(InputError) as e:
        load(path)
    assert str(e.value).startswith(path) and where in str(e.value)


def test_image_file_layers_are_reproducible(tmp_path, rootfs):
    from provision.images import debian as di
    path = _imagefile(tmp_path, "packages: [python3]\nimages:\n  a/b:1:\n"
                      "    files: {app.py: /app/app.py}\n    cmd: [python3, /app/app.py]\n"
                      "    env: {VERSION: '1.0'}\n    expose: [3894]\n")
    f = di.load(path)
    di.files_layer(f, f.images["a/b:1"]["files"], str(tmp_path / "l1.tar"))
    di.files_layer(f, f.images["a/b:1"]["files"], str(tmp_path / "l2.tar"))
    assert (tmp_path / "l1.tar").read_bytes() == (tmp_path / "l2.tar").read_bytes()
    with tarfile.open(tmp_path / "l1.tar") as tar:
        assert tar.getnames() == ["app", "app/app.py"]
    key = di.archive_key(f)
    (tmp_path / "app.py").write_text("print('changed')\n")
    assert di.archive_key(di.load(path)) != key       # a changed file is a new archive
    cfg = di._config("a/b:1", f.images["a/b:1"], [rootfs])
    assert "VERSION=1.0" in cfg.env and cfg.exposed_ports == ["3894/tcp"]
    cmd = di.mmdebstrap_command(f, "/out.tar")
    assert cmd[0] == "mmdebstrap" and "--include=python3" in cmd and cmd[-2:] == ["bookworm", "/out.tar"]


def test_build_uses_the_cached_base_and_archive(tmp_path, rootfs, monkeypatch):
    """With the base layer in the cache no mmdebstrap runs; a second build is the cached one."""
    import shutil
    from provision.images import debian as di
    path = _imagefile(tmp_path, "packages: [python3]\nimages:\n  a/b:1:\n"
                      "    files: {app.py: /app/app.py}\n  a/c:1: {cmd: [sh]}\n")
    cache = tmp_path / "cache"
    cache.mkdir()
    f = di.load(path)
    shutil.copy(rootfs, cache / f"debian-bookworm-{di.base_key(f)}.rootfs.tar")
    monkeypatch.setattr(di.shutil, "which", lambda _n: None)    # mmdebstrap must not be needed
    first = di.build(path, cache=str(cache))
    again = di.build(path, cache=str(cache))
    assert not first.cached and again.cached and first.images == again.images
    assert sorted(t for i in first.images for t in i.tags) == ["a/b:1", "a/c:1"]


# --- deploy --push-images ------------------------------------------------------------------

def test_push_source_from_flags_and_cluster_file(tmp_path):
    from stacks.images.push_missing import LOCAL_ENGINE, check_source, source_of
    cf = tmp_path / "c.yml"
    cf.write_text("name: c\nprovider: lab\nmanagers: 1\nworkers: 0\n")
    assert source_of(None, False, str(cf)) is None
    assert source_of(None, True, str(cf)) == LOCAL_ENGINE
    assert source_of("x.tar", True, str(cf)) == "x.tar"
    assert source_of(None, False, str(tmp_path / "none.yml")) is None
    cf.write_text("name: c\nprovider: lab\nmanagers: 1\nworkers: 0\nimages: {push_missing: true}\n")
    assert source_of(None, False, str(cf)) == LOCAL_ENGINE
    with pytest.raises(InputError, match="--push-from"):
        check_source(str(tmp_path / "missing.tar"))
    check_source(None)
    check_source(LOCAL_ENGINE)


def test_push_missing_refuses_an_archive_without_the_image(tmp_path, rootfs):
    from stacks.images.push_missing import push_missing
    archive = tmp_path / "a.tar"
    write_archive(str(archive), [ImageConfig("t/a:1", [rootfs])])
    with pytest.raises(InputError) as e:
        push_missing({"t/other:2": {"w1"}}, str(archive), str(tmp_path / "c.yml"))
    assert "t/other:2 not in it" in str(e.value) and "t/a:1" in str(e.value)


def test_missing_images_are_collected_for_push(tmp_path):
    from stacks.images.check import check_images
    from stacks.plan_apply.plan import CREATE, Action, Plan
    from stacks.specs.convert import StackSpec
    desired = StackSpec("st", services={"st_web": {
        "Name": "st_web", "TaskTemplate": {"ContainerSpec": {"Image": "app:1"}}}})
    plan = Plan("st")
    plan.actions.append(Action("service", "st_web", CREATE, spec=desired.services["st_web"]))
    nodes = [{"ID": n, "Description": {"Hostname": n}, "Spec": {"Role": "worker"},
              "Status": {"State": "ready"}} for n in ("w1", "w2")]
    missing: dict = {}
    problems, _ = check_images(None, desired, plan, nodes,
                               lambda ns: {"w1": {"app:1"}, "w2": set()}, missing)
    assert missing == {"app:1": {"w2"}}
    assert "deploy --push-images" in problems[0]


def test_progress_lines_start_at_the_first_byte():
    import io as _io
    from cli import ProgressPrinter
    now = [100.0]
    out = _io.StringIO()
    pp = ProgressPrinter(out, clock=lambda: now[0])
    pp("w1", "send", 0, 10_000_000)
    now[0] += 2.0
    pp("w1", "send", 4_000_000, 10_000_000)
    now[0] += 0.3
    pp("w1", "send", 5_000_000, 10_000_000)       # within a second: not shown
    assert out.getvalue().splitlines() == ["  w1: sending 4.0 MB / 10.0 MB  2.0 MB/s"]


def test_progress_ends_with_a_line_per_node_even_for_one_chunk():
    import io as _io
    from cli import ProgressPrinter
    now = [0.0]
    out = _io.StringIO()
    pp = ProgressPrinter(out, clock=lambda: now[0])
    pp("w2", "send", 0, 1_000_000)
    pp("w2", "send", 1_000_000, 1_000_000)
    now[0] += 0.5
    pp("w2", "done", 1_000_000, 1_000_000)
    assert out.getvalue().splitlines() == [
        "  w2: 1.0 MB sent, loaded and checked in 0.5 s (2.0 MB/s)"]


class FakeNode:
    """A node's image store behind a fake SSH session: answers the probe, takes `docker load`
    (reads the gzip stream it is sent) and `docker tag`."""

    def __init__(self, name, images=None):
        self.name, self.tags, self.ids, self.received = name, dict(images or {}), set(), 0
        self.ids |= set(self.tags.values())

    def session(self):
        node = self

        class S:
            def run(self, cmd, check=True, timeout=None, source=None, on_sent=None):
                from provision.remote.ssh import Result
                argv = list(cmd.argv)
                if argv[:2] == ["sh", "-c"]:            # the probe
                    refs = argv[4:]
                    out = "".join(f"{r} {node.tags.get(r) or (r if r in node.ids else '-')}\n"
                                  for r in refs)
                    return Result(out, "", 0)
                if argv[:2] == ["docker", "load"]:
                    data = source.read()
                    node.received += len(data)
                    on_sent(len(data))
                    names = gzip.decompress(data)          # a real gzip stream
                    with tarfile.open(fileobj=io.BytesIO(names)) as tar:
                        manifest = json.load(tar.extractfile("manifest.json"))
                    for m in manifest:
                        iid = "sha256:" + m["Config"][:-5]
                        node.ids.add(iid)
                        for t in m["RepoTags"]:
                            node.tags[t] = iid
                    return Result("", "", 0)
                if argv[:2] == ["docker", "tag"]:
                    node.tags[argv[3]] = argv[2]
                    return Result("", "", 0)
                raise AssertionError(argv)

            def close(self):
                pass
        return S()


def test_push_archive_loads_tags_skips_and_keeps_the_gzip(rootfs, tmp_path):
    from provision.base.progress import TransferProgress
    from provision.images.push import push_archive
    archive = tmp_path / "a.tar"
    [img] = write_archive(str(archive), [ImageConfig("t/a:1", [rootfs])])
    nodes = {"m1": FakeNode("m1"), "w1": FakeNode("w1", {"t/a:1": img.id}),
             "w2": FakeNode("w2", {"old/a:1": img.id})}
    hosts = [Host(n, "x") for n in nodes]
    seen = []
    r = push_archive(str(archive), hosts, lambda h: nodes[h.name].session(),
                     keep_compressed=True, on_progress=seen.append)
    assert [(n.host, n.action) for n in r.nodes] == [("m1", "loaded"), ("w1", "present"),
                                                     ("w2", "tagged")]
    assert nodes["m1"].received == r.wire_bytes == os.path.getsize(str(archive) + ".gz")
    assert nodes["w1"].received == nodes["w2"].received == 0
    assert nodes["w2"].tags["t/a:1"] == img.id
    assert TransferProgress("m1", "done", r.wire_bytes, r.wire_bytes) in seen
    mtime = os.path.getmtime(str(archive) + ".gz")
    nodes["m2"] = FakeNode("m2")
    r = push_archive(str(archive), [Host("m2", "x")], lambda h: nodes[h.name].session(),
                     keep_compressed=True)
    assert r.nodes[0].action == "loaded"
    assert os.path.getmtime(str(archive) + ".gz") == mtime     # reused, not rebuilt
    r = push_archive(str(archive), hosts, lambda h: nodes[h.name].session())
    assert r.changes == [] and r.wire_bytes == 0
