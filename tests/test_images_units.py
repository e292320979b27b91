"""Units for image archives and `images push` decisions (no hosts)."""
from __future__ import annotations

import gzip
import io
import json
import tarfile

import pytest

from provision.errors import InputError
from provision.image_archive import ImageConfig, read_images, write_archive
from provision.image_commands import select_hosts
from provision.image_push import LOAD, PRESENT, TAG, decide, mismatches, parse_probe, \
    probe_command
from provision.hosts import Host
from provision.images import write_rootfs_tar


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
    from provision.image_archive import ArchiveImage
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
