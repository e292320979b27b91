"""`swarmsmith up` (in this process) against the emulator when the API misbehaves: failures
reach the user at once, named, with the usual exit codes; no SSH is reached in these runs."""
from __future__ import annotations

import json
import os

import pytest
import yaml

import cli
from tests.do_emulator import DOEmulator
from tests.do_emulator.testing import write_public_key

TOKEN = "dop_v1_cli_token_c1c1c1"


@pytest.fixture
def emu(monkeypatch):
    with DOEmulator(TOKEN, fast=True, activation_delay=30) as e:
        monkeypatch.setenv("DIGITALOCEAN_TOKEN", TOKEN)
        monkeypatch.setenv("DIGITALOCEAN_END_POINT", e.url)
        yield e


def cluster_file(tmp_path, **settings) -> str:
    write_public_key(tmp_path)
    path = os.path.join(tmp_path, "cluster.yml")
    with open(path, "w") as f:
        yaml.safe_dump({"name": "dox", "provider": "digitalocean", "managers": 1, "workers": 1,
                        "digitalocean": {"region": "fra1", "size": "s-1vcpu-1gb",
                                         "image": "ubuntu-24-04-x64",
                                         "ssh_key": "id_ed25519.pub", **settings}}, f)
    return path


def inventory(tmp_path) -> dict:
    with open(os.path.join(tmp_path, ".swarmsmith", "dox", "inventory.json")) as f:
        return json.load(f)


def test_errored_create_action_fails_up_at_the_next_poll(tmp_path, emu, capsys):
    emu.fail_action("dox-worker-1")
    path = cluster_file(tmp_path, poll_interval=0.2, wait_timeout=30)
    assert cli.main(["up", path, "--json"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("swarmsmith: error: droplet dox-worker-1: create action ")
    assert "errored at DigitalOcean (destroyed; a re-run creates it again; still being " \
           "created: dox-manager-1)" in err[-1]
    assert emu.list_polls("swarmsmith:dox") == 2          # the first look, then one poll
    assert [d["name"] for d in emu.droplets()] == ["dox-manager-1"]
    state = inventory(tmp_path)["provider_state"]
    assert list(state["creating"]) == ["dox-manager-1"]   # still followed by the next run


def test_exhausted_hourly_budget_fails_up_with_the_reset_time(tmp_path, emu, capsys):
    emu.hourly_limit = 3
    path = cluster_file(tmp_path)
    assert cli.main(["up", path, "--json"]) == 1
    err = capsys.readouterr().err.strip()
    assert "the rate limit of 3 requests an hour is used up; requests are accepted again from " \
        in err
    assert emu.total_requests() == 4                      # three answered, one refused


def test_plan_and_up_refuse_droplets_beyond_the_account_limit(tmp_path, emu, capsys):
    emu.set_account(droplet_limit=5)
    path = cluster_file(tmp_path)
    with open(path) as f:
        doc = yaml.safe_load(f)
    doc.update(managers=3, workers=5)
    with open(path, "w") as f:
        yaml.safe_dump(doc, f)
    for command in ("plan", "up"):
        assert cli.main([command, path]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1] == (
            f"swarmsmith: error: {path}: 8 droplet(s) to create, but the DigitalOcean account's "
            "droplet limit is 5 and it has 0 droplet(s) already (5 free); nothing was created: "
            "ask DigitalOcean to raise the droplet limit (control panel or support), or ask "
            "for fewer droplets (managers, workers)")
    assert {meth for meth, *_ in emu.log} == {"GET"}


def test_account_warning_is_shown_by_plan(tmp_path, emu, capsys):
    emu.set_account(status="warning", status_message="Card expires soon")
    emu.set_activation_delay(0)
    path = cluster_file(tmp_path, poll_interval=0.1)
    assert cli.main(["plan", path]) == 0
    assert "DigitalOcean account warning: Card expires soon" in capsys.readouterr().out
