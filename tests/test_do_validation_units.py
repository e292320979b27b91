"""Every documented DigitalOcean limit is checked before the first API request: `up` and `plan`
refuse a bad value with exit 2, one line naming the file and key, and the emulator sees nothing."""
from __future__ import annotations

import math
import os

import pytest
import yaml

import cli
from provision.hosts.digitalocean import validate_settings
from tests.conftest import run_cli
from tests.do_emulator import DOEmulator
from tests.do_emulator.testing import write_public_key

TOKEN = "dop_v1_validation_token_5eed"


@pytest.fixture(scope="module")
def emu():
    with DOEmulator(TOKEN, fast=True) as e:
        yield e


@pytest.fixture
def cluster(tmp_path, emu, monkeypatch):
    monkeypatch.setenv("DIGITALOCEAN_TOKEN", TOKEN)
    monkeypatch.setenv("DIGITALOCEAN_END_POINT", emu.url)
    write_public_key(tmp_path)

    def write(**settings) -> str:
        do = {"region": "fra1", "size": "s-1vcpu-1gb", "image": "ubuntu-24-04-x64",
              "ssh_key": "id_ed25519.pub", **settings}
        path = os.path.join(tmp_path, "cluster.yml")
        with open(path, "w") as f:
            yaml.safe_dump({"name": "dox", "provider": "digitalocean", "managers": 1,
                            "workers": 1, "digitalocean": do}, f)
        return path
    return write


BAD = [
    ({"region": "Frankfurt"}, "region: 'Frankfurt' is not a region slug"),
    ({"region": "fra"}, "region: 'fra' is not a region slug"),
    ({"size": "S 1vcpu"}, "size: 'S 1vcpu' is not a size slug"),
    ({"image": "Ubuntu 24.04"}, "image: 'Ubuntu 24.04' is not an image slug"),
    ({"image": -5}, "image: -5 is not an image id"),
    ({"image": 2 ** 70}, "image: 1180591620717411303424 is not an image id"),
    ({"image": True}, "image: expected an image slug"),
    ({"user_data": "x" * (64 * 1024 + 1)}, "user_data: 65537 bytes; DigitalOcean takes at most 65536"),
    ({"user_data": "é" * (32 * 1024 + 1)}, "user_data: 65538 bytes"),
    ({"vpc_ip_range": "10.0.0.0/8"}, "vpc_ip_range: 10.0.0.0/8: a VPC range is from /16"),
    ({"vpc_ip_range": "10.1.2.0/30"}, "vpc_ip_range: 10.1.2.0/30: a VPC range is from /16"),
    ({"vpc_ip_range": "198.18.0.0/16"}, "vpc_ip_range: 198.18.0.0/16 is outside the private ranges"),
    ({"vpc_ip_range": "100.64.0.0/16"}, "vpc_ip_range: 100.64.0.0/16 is outside the private ranges"),
    ({"vpc_ip_range": "10.1.2.3/20"}, "vpc_ip_range: '10.1.2.3/20' is not a CIDR range"),
    ({"vpc_ip_range": "fd00::/48"}, "vpc_ip_range: fd00::/48 is outside the private ranges"),
    ({"tags": ["ok", "no spaces"]}, "tags[1]: 'no spaces' is not a tag"),
    ({"tags": ["t" * 256]}, "tags[0]: 'tttt"),
    ({"tags": ["swarmsmith:mine"]}, "tags[0]: tags starting with 'swarmsmith:' are swarmsmith's"),
    ({"published_ports": ["0"]}, "published_ports[0]: '0': ports run from 1 to 65535"),
    ({"published_ports": [{"port": 80, "protocol": "icmp"}]},
     "published_ports[0]: protocol must be tcp or udp"),
    ({"published_ports": [{"port": 80, "sources": ["nowhere"]}]},
     "published_ports[0]: 'nowhere' is not an address"),
    ({"published_ports": ["90-80"]}, "published_ports[0]: '90-80': ports run from 1 to 65535"),
    ({"ssh_sources": [5]}, "ssh_sources: 5 is not an address"),
    ({"poll_interval": math.nan}, "poll_interval: expected a number of seconds from 0 to 86400"),
    ({"wait_timeout": 1e308}, "wait_timeout: expected a number of seconds from 0 to 86400"),
    ({"list_lag": -1}, "list_lag: expected a number of seconds from 0 to 86400"),
    ({"vpc": "mine"}, "vpc: expected 'create', 'default' or a VPC id"),
]


@pytest.mark.parametrize("change, message", BAD, ids=[m.split(":")[0] + str(i)
                                                       for i, (_, m) in enumerate(BAD)])
@pytest.mark.parametrize("command", ["up", "plan"])
def test_refused_before_any_request(cluster, emu, capsys, change, message, command):
    path = cluster(**change)
    emu.reset_counts()
    assert cli.main([command, path]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"swarmsmith: error: {path}: digitalocean.{message}"), err
    assert len(err.splitlines()) == 1
    assert emu.total_requests() == 0


def test_cli_process_exit_2_without_traceback(cluster, emu):
    path = cluster(vpc_ip_range="10.1.2.0/30")
    emu.reset_counts()
    r = run_cli("up", path)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == (f"swarmsmith: error: {path}: digitalocean.vpc_ip_range: "
                                "10.1.2.0/30: a VPC range is from /16 (largest) to /28 (smallest)")
    assert emu.total_requests() == 0


@pytest.mark.parametrize("image, sent", [(190000001, 190000001), ("190000001", 190000001),
                                         ("ubuntu-24-04-x64", "ubuntu-24-04-x64")])
def test_image_slug_or_integer_id(tmp_path, image, sent):
    pub = write_public_key(tmp_path)
    out = validate_settings({"region": "fra1", "size": "s-1vcpu-1gb", "image": image,
                             "ssh_key": pub}, "cluster.yml")
    assert out["image"] == sent


@pytest.mark.parametrize("rng", ["10.0.0.0/16", "172.31.255.240/28", "192.168.4.0/24"])
def test_vpc_ranges_the_api_takes(tmp_path, rng):
    pub = write_public_key(tmp_path)
    out = validate_settings({"region": "fra1", "size": "s-1vcpu-1gb", "image": "x",
                             "ssh_key": pub, "vpc_ip_range": rng}, "cluster.yml")
    assert out["vpc_ip_range"] == rng
