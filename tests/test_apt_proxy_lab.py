"""The labs' apt proxy on real lab hosts: one apt-cacher-ng for the machine, reached by each
lab's hosts at their own gateway; a lab's `down` leaves it to the labs still using it, the
last one stops it. Two small labs (the machine's own root: quick), the proxy asked for as a
lab with its own image asks for it. Needs root."""
from __future__ import annotations

import os
import subprocess

import pytest

from provision.lab import aptproxy
from provision.lab.lab import Lab, machine_lock
from tests.test_fresh_lab import listening_on

# it starts and stops the machine's one proxy: no other lab module at once
MACHINE_WIDE = True

pytestmark = pytest.mark.lab

LABS = ("apxa", "apxb")


def fetch_report(lab: Lab) -> str:
    """The proxy's report page, asked from the lab's host at its gateway: the status line."""
    layout = lab.layout
    host = layout.host(1, f"{lab.name}-1")
    code = ("import socket; s = socket.create_connection(('%s', %d), timeout=5); "
            "s.sendall(b'GET /acng-report.html HTTP/1.0\\r\\n\\r\\n'); "
            "print(s.recv(200).split(b'\\r\\n')[0].decode())" % (layout.public_gateway,
                                                                 aptproxy.PORT))
    p = subprocess.run(host.nsenter() + ["python3", "-c", code], capture_output=True,
                       text=True, timeout=30)
    return p.stdout.strip() or p.stderr.strip().splitlines()[-1]


def nat_rules() -> list[str]:
    out = subprocess.run(["iptables", "-t", "nat", "-S", "PREROUTING"], capture_output=True,
                         text=True, check=True).stdout
    return [line for line in out.splitlines() if f"--dport {aptproxy.PORT}" in line]


@pytest.fixture
def two_labs():
    labs = [Lab(name) for name in LABS]
    try:
        for lab in labs:
            lab.up([f"{lab.name}-1"])
        yield labs
    finally:
        for lab in labs:
            Lab(lab.name).down()


def test_one_proxy_serves_every_lab_until_the_last_goes(two_labs):
    a, b = two_labs
    with machine_lock():
        first = aptproxy.ensure(a.layout)
        second = aptproxy.ensure(b.layout)
        again = aptproxy.ensure(b.layout)
    assert first == f"lab apxa: apt proxy on {aptproxy.url(a.layout)} started"
    assert "shared with other labs" in second and again is None
    pid = aptproxy.pid()
    assert pid and aptproxy.users() == ["apxa", "apxb"]
    # one listener, on its own address only: not on either lab's gateway
    assert listening_on(aptproxy.PORT) == [aptproxy.SHARED_ADDRESS]
    assert fetch_report(a) == fetch_report(b) == "HTTP/1.1 200 OK"
    assert len(nat_rules()) == 2

    # the first lab's down leaves the proxy to the other
    assert "lab apxa: apt proxy left to lab(s) apxb" in a.down()
    assert aptproxy.pid() == pid and aptproxy.users() == ["apxb"]
    assert fetch_report(b) == "HTTP/1.1 200 OK"
    assert len(nat_rules()) == 1 and f"-i {b.layout.public_bridge} " in nat_rules()[0]

    # the last one stops it: no process, no listener, no rule, no interface
    assert "lab apxb: apt proxy stopped" in b.down()
    assert aptproxy.pid() is None and aptproxy.users() == []
    assert aptproxy.SHARED_ADDRESS not in listening_on(aptproxy.PORT)
    assert nat_rules() == []
    assert not os.path.exists(f"/sys/class/net/{aptproxy.INTERFACE}")
    assert os.path.isdir(aptproxy.PACKAGE_CACHE)        # kept for the next install


def test_a_proxy_killed_under_a_lab_is_started_again(two_labs):
    a, _ = two_labs
    with machine_lock():
        aptproxy.ensure(a.layout)
    os.kill(aptproxy.pid(), 9)
    with machine_lock():
        change = aptproxy.ensure(a.layout)
    assert change and change.endswith("started")
    assert fetch_report(a) == "HTTP/1.1 200 OK"
