"""A lab this machine cannot hold is refused before anything is made, with the numbers; the
kernel's neighbour table, which every network namespace shares, is sized for the lab hosts."""
from __future__ import annotations

import os

import pytest

from provision.base.errors import InputError
from provision.hosts.lab import capacity


def test_the_neighbour_table_is_sized_for_every_host_knowing_every_other():
    assert capacity.neighbour_entries(3) == 1024            # never below Linux's default
    # 100 hosts: two lab networks and an overlay, each host every other, twice over
    assert capacity.neighbour_entries(100) >= 3 * 100 * 100 * 2
    assert capacity.neighbour_entries(100) % 1024 == 0


def fake_proc(tmp_path, thresholds: dict) -> str:
    for family, (t2, t3) in thresholds.items():
        d = tmp_path / "proc/sys/net" / family / "neigh/default"
        d.mkdir(parents=True)
        (d / "gc_thresh2").write_text(f"{t2}\n")
        (d / "gc_thresh3").write_text(f"{t3}\n")
    return str(tmp_path)


def test_limits_are_raised_for_many_hosts_and_said(tmp_path):
    root = fake_proc(tmp_path, {"ipv4": (512, 1024), "ipv6": (512, 1024)})
    changes = capacity.size_neighbour_table(100, root=root)
    want = capacity.neighbour_entries(100)
    v4 = tmp_path / "proc/sys/net/ipv4/neigh/default"
    assert int((v4 / "gc_thresh3").read_text()) == want
    assert int((v4 / "gc_thresh2").read_text()) == want // 2
    assert len(changes) == 2 and f"raised from 1024 to {want}" in changes[0]
    assert "shared by every network namespace" in changes[0]
    assert capacity.size_neighbour_table(100, root=root) == []      # a second run: no change


def test_limits_are_never_lowered(tmp_path):
    root = fake_proc(tmp_path, {"ipv4": (60000, 120000)})
    assert capacity.size_neighbour_table(10, root=root) == []
    v4 = tmp_path / "proc/sys/net/ipv4/neigh/default"
    assert (v4 / "gc_thresh3").read_text().strip() == "120000"


def test_a_lab_bigger_than_the_memory_is_refused_with_the_numbers():
    with pytest.raises(InputError) as e:
        capacity.check(100, 100, available_mb=8 * 1024, nofile=(1024, 4096))
    text = str(e.value)
    assert "100 more lab host(s) need about 14.7 GiB" in text
    assert "8.0 GiB is available, room for 51 more" in text
    assert e.value.exit_code == 2
    capacity.check(100, 100, available_mb=20 * 1024, nofile=(1024, 4096))     # fits


def test_a_lab_beyond_the_open_files_limit_is_refused():
    with pytest.raises(InputError) as e:
        capacity.check(300, 300, available_mb=10 ** 6, nofile=(1024, 1024))
    assert "300 lab hosts need about 1264 open files" in str(e.value)
    assert "at most 240 hosts" in str(e.value)


def test_the_soft_open_files_limit_is_raised_for_many_hosts():
    import resource
    import subprocess
    import sys
    code = ("import resource; resource.setrlimit(resource.RLIMIT_NOFILE, (256, 4096));"
            "from provision.remote.parallel import raise_open_files; raise_open_files(100);"
            "print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.stdout.strip() == "464", out.stderr
    assert resource.getrlimit(resource.RLIMIT_NOFILE)       # this process untouched


@pytest.mark.lab
def test_lab_up_refuses_a_size_this_machine_cannot_hold_before_making_anything():
    from tests.conftest import run_cli
    from provision.hosts.lab.lab import list_labs
    # more than the machine's whole memory holds: what is available when the command checks
    # (other tests free and take memory meanwhile) can only be less
    with open("/proc/meminfo") as f:
        total = next(int(line.split()[1]) // 1024 for line in f if line.startswith("MemTotal:"))
    too_many = min(250, (total - capacity.RESERVE_MB) // capacity.MB_PER_HOST + 1)
    if too_many * capacity.MB_PER_HOST + capacity.RESERVE_MB <= total:
        pytest.skip("this machine holds a full lab of 250 hosts")
    r = run_cli("lab", "up", "--nodes", str(too_many), "--name", "capref")
    if r.returncode != 2:
        run_cli("lab", "down", "--name", "capref")
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and "GiB is available" in r.stderr
    assert "capref" not in list_labs()
