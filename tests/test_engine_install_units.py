"""Units of the engine install: install methods as generated commands, version picking (run by
a real shell against a fake apt-cache), apt proxy/mirror steps, the auto fallback, version
matching, cluster-file keys and the lab image recipe. No root, no network."""
from __future__ import annotations

import json
import os
import stat
import subprocess

import pytest

from inventory import clusterfile
from provision.engine import install as engine
from provision.remote import facts as F
from provision.base.errors import InputError
from provision.hosts.lab import image

MADISON = {
    "docker.io": ["20.10.24+dfsg1-1+deb12u1", "20.10.24+dfsg1-1", "20.10.5+dfsg1-1+deb11u2"],
    "docker-ce": ["5:27.3.1-1~debian.12~bookworm", "5:24.0.7-1~debian.12~bookworm",
                  "5:24.0.10-1~debian.12~bookworm"],
    "docker-ce-cli": ["5:27.3.1-1~debian.12~bookworm", "5:24.0.7-1~debian.12~bookworm"],
}


def facts(**kw) -> dict:
    base = dict(os="debian", os_like="", dockerd="", systemd=0, initscript=0, server="",
                apt=1, apt_proxy="", apt_mirror="")
    base.update(kw)
    out = "".join(f"{k}={v}\n" for k, v in base.items()) + "addresses=\n---daemon.json---\n"
    return F.parse_engine_facts(out)


def run_pick(tmp_path, package: str, version: str) -> str:
    """The install scripts' version picker, run by sh with a fake apt-cache on PATH."""
    fake = tmp_path / "apt-cache"
    lines = "\n".join(f" {package} | {v} | http://deb.debian.org/debian bookworm/main amd64 Packages"
                      for v in MADISON[package])
    fake.write_text(f"#!/bin/sh\ncat <<'EOF'\n{lines}\nEOF\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    script = f"V='{version}'\n" + engine.PICK_VERSION + f"pick {package}\n"
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True,
                         env=dict(os.environ, PATH=f"{tmp_path}:{os.environ['PATH']}"))
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.parametrize("package,version,want", [
    ("docker.io", "20.10.24", "20.10.24+dfsg1-1+deb12u1"),     # newest of that version
    ("docker.io", "20.10.24+dfsg1-1", "20.10.24+dfsg1-1"),
    ("docker.io", "20.10", "20.10.24+dfsg1-1+deb12u1"),
    ("docker.io", "20.10.2", ""),                # not a prefix of 20.10.24 at a boundary
    ("docker.io", "20x10", ""),                  # the dot is a dot, not "any character"
    ("docker-ce", "24.0", "5:24.0.7-1~debian.12~bookworm"),   # epoch skipped
    ("docker-ce", "24.0.10", "5:24.0.10-1~debian.12~bookworm"),
    ("docker-ce", "27", "5:27.3.1-1~debian.12~bookworm"),
    ("docker-ce", "2", ""),
])
def test_version_picker(tmp_path, package, version, want):
    assert run_pick(tmp_path, package, version) == want


@pytest.mark.parametrize("install,family,change,has,lacks", [
    ("distro", {"debian"}, "engine installed (the distribution's docker.io)",
     ["install --allow-downgrades", '"$pkg"', "--force-confold"], ["download.docker.com", "get.docker.com"]),
    ("docker-repo", {"ubuntu", "debian"}, "engine installed (Docker apt repository)",
     ["download.docker.com/linux/$ID", "FALLBACK=0", "docker-ce=$ce"], ["get.docker.com"]),
    ("auto", {"debian"}, "engine installed (Docker apt repository)",
     ["download.docker.com/linux/$ID", "FALLBACK=1", "pkg=docker.io"], ["get.docker.com"]),
    ("get-docker", {"debian"}, "engine installed (get.docker.com)",
     ['VERSION="$V" sh "$d/get-docker.sh"'], ["download.docker.com/linux"]),
    ("auto", {"alpine"}, "engine installed (get.docker.com; alpine is not Debian or Ubuntu)",
     ["https://get.docker.com"], []),
])
def test_install_scripts(install, family, change, has, lacks):
    got_change, script = engine.install_script(install, family, "24.0")
    assert got_change == change
    assert "V=24.0\n" in script
    for h in has:
        assert h in script, h
    for word in lacks:
        assert word not in script, word
    # every script is valid sh
    assert subprocess.run(["sh", "-n", "-c", script]).returncode == 0


def test_install_version_is_quoted_in_the_script():
    _, script = engine.install_script("distro", {"debian"}, "1.0;touch /tmp/x")
    assert "V='1.0;touch /tmp/x'\n" in script


def test_auto_fallback_is_reported_from_the_install_output():
    out = "noise\nFALLBACK: Docker's apt repository (download.docker.com) is unreachable\n"
    assert engine.fallback_change(out) == ("engine installed (the distribution's docker.io: "
                                           "Docker's apt repository (download.docker.com) is "
                                           "unreachable)")
    assert engine.fallback_change("all fine\n") is None


def test_apt_proxy_and_mirror_are_set_before_the_install():
    steps = engine.plan(facts(), {}, "distro",
                        engine.AptSettings(proxy="http://p:3142", mirror="http://m/debian"))
    assert [s.change for s in steps][:3] == [
        "apt mirror set to http://m/debian", "apt proxy set to http://p:3142",
        "engine installed (the distribution's docker.io)"]
    assert steps[1].command.stdin == (b'Acquire::http::Proxy "http://p:3142";\n'
                                      b'Acquire::https::Proxy "http://p:3142";\n')
    assert "M=http://m/debian" in steps[0].command.wire()


def test_apt_settings_change_only_where_the_host_differs():
    running = dict(dockerd="/usr/bin/dockerd", server="20.10.24+dfsg1", initscript=1)
    same = facts(apt_proxy="http://p:3142", apt_mirror="http://m/debian", **running)
    assert engine.plan(same, {}, "distro", engine.AptSettings("http://p:3142",
                                                               "http://m/debian")) == []
    # a proxy no longer wanted is removed before an install; a host without apt is left alone
    steps = engine.plan(facts(apt_proxy="http://old:3142"), {}, "distro", engine.AptSettings())
    assert [s.change for s in steps][:2] == ["apt proxy setting removed",
                                             "engine installed (the distribution's docker.io)"]
    assert engine.plan(facts(apt=0), {}, "distro",
                       engine.AptSettings("http://p:3142"))[0].installs


def test_apt_settings_are_left_alone_where_docker_is_installed():
    """apt's settings are for the install: on hosts that have Docker (running or stopped, the
    daemon.json to change or not) nothing in /etc/apt changes, and the plan shows none."""
    apt = engine.AptSettings(proxy="http://p:3142", mirror="http://m/debian")
    for kw in (dict(server="20.10.24+dfsg1"), dict(server="")):
        f = facts(dockerd="/usr/bin/dockerd", initscript=1, apt_proxy="http://old:3142", **kw)
        steps = engine.plan(f, {"debug": True}, "distro", apt)
        assert not any("apt" in s.change or "/etc/apt" in s.command.wire() for s in steps), \
            [s.change for s in steps]


def test_the_proxy_file_is_replaced_whole_by_concurrent_writers(tmp_path):
    """Two writers on one /etc (lab hosts of the default image share the machine's): each
    writes a temporary file of its own and renames it; neither fails, the file is whole."""
    (tmp_path / "apt.conf.d").mkdir()
    step = engine.apt_steps(facts(), engine.AptSettings(proxy="http://p:3142"))[0]
    script = step.command.argv[-1].replace("/etc/apt", str(tmp_path))
    procs = [subprocess.Popen(["sh", "-c", script], stdin=subprocess.PIPE) for _ in range(8)]
    for p in procs:
        p.communicate(step.command.stdin)
    assert [p.returncode for p in procs] == [0] * 8
    assert (tmp_path / "apt.conf.d" / "90swarmsmith-proxy").read_bytes() == step.command.stdin
    assert sorted(os.listdir(tmp_path)) == ["apt.conf.d"]       # no temporary file left


def test_mirror_script_rewrites_archive_urls_only(tmp_path):
    src = tmp_path / "sources.list"
    src.write_text("deb http://deb.debian.org/debian bookworm main\n"
                   "deb http://deb.debian.org/debian-security bookworm-security main\n")
    script = (engine.MIRROR_SCRIPT.replace("/etc/apt/sources.list.d/", str(tmp_path) + "/none/")
              .replace("/etc/apt/sources.list", str(src))
              .replace(engine.MIRROR_FILE, str(tmp_path / "mirror"))
              .replace("/etc/apt/.swarmsmith-mirror", str(tmp_path / ".m")))
    subprocess.run(["sh", "-c", "M=http://mirror.example/debian\n" + script], check=True)
    assert src.read_text() == ("deb http://mirror.example/debian bookworm main\n"
                               "deb http://deb.debian.org/debian-security bookworm-security main\n")
    assert (tmp_path / "mirror").read_text() == "http://mirror.example/debian\n"


@pytest.mark.parametrize("running,wanted,ok", [
    ("20.10.24+dfsg1", "20.10.24", True), ("20.10.24+dfsg1", "20.10", True),
    ("20.10.24+dfsg1", "20.10.2", False), ("27.3.1", "24.0", False), ("27.3.1", "", True),
    ("24.0.7", "24.0.7", True),
])
def test_version_matches(running, wanted, ok):
    assert engine.version_matches(running, wanted) is ok


def test_cluster_file_engine_keys(tmp_path):
    c = clusterfile.validate({"name": "x", "engine": {
        "install": "distro", "version": "20.10.24", "apt_proxy": "http://apt-proxy.lab:3142",
        "apt_mirror": "http://mirror/debian/"}, "lab": {"image": "debian-12"}}, "c.yml")
    assert (c.install, c.version, c.apt_proxy, c.apt_mirror) == (
        "distro", "20.10.24", "http://apt-proxy.lab:3142", "http://mirror/debian")
    assert c.provider_settings["image"] == "debian-12"
    # the older name of docker-repo still works
    assert clusterfile.validate({"name": "x", "engine": {"install": "apt"}}, "c.yml").install == \
        "docker-repo"


@pytest.mark.parametrize("engine_,path,words", [
    ({"version": 24.0}, "engine.version", "quoted version"),
    ({"version": "24.0; reboot"}, "engine.version", 'like "24.0"'),
    ({"apt_proxy": "socks5://x"}, "engine.apt_proxy", "http:// or https:// URL"),
    ({"apt_mirror": "http://a b"}, "engine.apt_mirror", "http:// or https:// URL"),
    ({"apt_proxy": ["x"]}, "engine.apt_proxy", "an http(s) URL"),
    ({"install": "yum"}, "engine.install", "distro, docker-repo"),
])
def test_cluster_file_bad_engine_keys(engine_, path, words):
    with pytest.raises(InputError) as e:
        clusterfile.validate({"name": "x", "engine": engine_}, "c.yml")
    assert str(e.value).startswith(f"c.yml: {path}: ") and words in str(e.value), str(e.value)
    assert e.value.exit_code == 2


@pytest.mark.parametrize("key", ["apt_proxy", "apt_mirror"])
def test_apt_settings_refused_for_lab_hosts_that_share_the_machines_etc(key):
    with pytest.raises(InputError) as e:
        clusterfile.validate({"name": "x", "engine": {key: "http://p:3142"}}, "c.yml")
    assert str(e.value).startswith(f"c.yml: engine.{key}: lab hosts of the default image share")
    assert e.value.exit_code == 2
    clusterfile.validate({"name": "x", "engine": {key: "http://p:3142"},
                          "lab": {"image": "debian-12"}}, "c.yml")


def test_cluster_file_bad_lab_image():
    with pytest.raises(InputError, match=r"lab.image: expected default or debian-12"):
        clusterfile.validate({"name": "x", "lab": {"image": "ubuntu"}}, "c.yml")


def test_image_recipe_uses_the_machines_debian_mirror(tmp_path, monkeypatch):
    monkeypatch.setenv("SWARMSMITH_DEBIAN_MIRROR", "http://mirror.example/debian/")
    cmd = image.build_command(image.IMAGES["debian-12"], "/out", image.debian_mirror())
    assert cmd[:2] == ["mmdebstrap", "--variant=apt"] and "bookworm" in cmd
    assert "openssh-server" in cmd[2] and "docker" not in " ".join(cmd)
    assert cmd[-3:] == ["deb http://mirror.example/debian bookworm main",
                        "deb http://mirror.example/debian bookworm-updates main",
                        "deb http://mirror.example/debian-security bookworm-security main"]


def test_image_adaptation(tmp_path):
    root = tmp_path / "root"
    (root / "etc/ssh").mkdir(parents=True)
    (root / "etc/ssh/ssh_host_ed25519_key").write_text("shared secret")
    (root / "etc/ssh/sshd_config").write_text("x")
    image._adapt(str(root))
    assert not (root / "etc/ssh/ssh_host_ed25519_key").exists()   # each host gets its own
    assert (root / "etc/ssh/sshd_config").exists()
    assert (root / "usr/sbin/policy-rc.d").read_text().endswith("exit 101\n")
    assert "ulimit()" in (root / "etc/default/docker").read_text()
    assert (root / "etc/hosts").exists() and (root / "var/lib/docker").is_dir()


@pytest.mark.parametrize("version, strict", [("apt 2.6.1 (amd64)", True),
                                             ("apt 2.0.9 (amd64)", False)])
def test_apt_update_fails_on_an_index_it_could_not_fetch_where_apt_can_say_so(tmp_path, version,
                                                                              strict):
    """apt-get update exits 0 when an index was not fetched (a proxy cut the answer short), and
    the install then finds no docker.io: where apt knows --error-on=any, the try fails and the
    next one fetches it again."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "apt-get").write_text(
        "#!/bin/sh\n"
        f"[ \"$1\" = --version ] && {{ echo '{version}'; exit 0; }}\n"
        "echo \"$*\" >> \"$(dirname \"$0\")/calls\"\n"
        # the first update loses an index: only --error-on=any makes that a failure
        "n=$(wc -l < \"$(dirname \"$0\")/calls\")\n"
        "case \"$*\" in *--error-on=any*) [ \"$n\" -ge 2 ] || exit 100;; esac\n")
    (bin_ / "apt-get").chmod(0o755)
    script = engine.PICK_VERSION + "\nupdate\n"
    r = subprocess.run(["sh", "-c", script], capture_output=True, text=True,
                       env={"PATH": f"{bin_}:/usr/bin:/bin"})
    calls = (bin_ / "calls").read_text().splitlines()
    assert r.returncode == 0, r.stderr
    assert all(("--error-on=any" in c) == strict for c in calls)
    assert len(calls) == (2 if strict else 1)       # the lost index is fetched again
