"""The digitalocean provider, through the real python-digitalocean, against the emulator."""
from __future__ import annotations

import json
import logging
import math
import socket
import threading

import pytest

from provision.hosts.digitalocean import (DigitalOceanProvider, cluster_tag, firewall_rules, role_tag,
                                    tcp_ssh_check, validate_settings)
from provision.hosts.do_api import DigitalOceanError, DOApi, RateLimitExhausted
from provision.base.errors import (EXIT_BAD_INPUT, EXIT_FAILED, EXIT_TIMED_OUT, EXIT_UNREACHABLE,
                              InputError, SwarmsmithError, TimeoutError_, UnreachableError)
from provision.base.hosts import WantedHost
from tests.do_emulator import DOEmulator
from tests.do_emulator.schemas import nulls, problems
from tests.fakes.clock import FakeClock
from tests.do_emulator.testing import settings, write_public_key

TOKEN = "dop_v1_provider_secret_token_c0ffee42"
TAG = "swarmsmith:demo"
POST_DROPLETS = ("POST", "/v2/droplets")


class Env:
    """`fast`: no list lag and no minute limits (most tests count polls); else the emulator's
    defaults, as the API behaves."""

    def __init__(self, tmp_path, fast=True, **emulator):
        self.ft = FakeClock()
        self.pub = write_public_key(tmp_path)
        self.emu = DOEmulator(TOKEN, fast=fast, clock=self.ft.clock, wall_clock=self.ft.clock,
                              activation_delay=7, **emulator).start()
        self.saved: list[dict] = []
        self.progress: list[tuple[str, str]] = []

    def provider(self, state=None, ssh_check=None, prune=False, api=None, run_id=None,
                 **overrides):
        return DigitalOceanProvider(
            "demo", settings(self.pub, **overrides), state, api=api, run_id=run_id,
            env={"DIGITALOCEAN_TOKEN": TOKEN, "DIGITALOCEAN_END_POINT": self.emu.url},
            clock=self.ft.clock, sleep=self.ft.sleep, wall_clock=self.ft.clock,
            ssh_check=ssh_check, prune=prune, on_state=self.saved.append)

    def api(self):
        return DOApi(TOKEN, end_point=self.emu.url, clock=self.ft.clock, sleep=self.ft.sleep,
                     wall_clock=self.ft.clock)

    def note(self, name, message):
        self.progress.append((name, message))

    def names(self, tag=TAG):
        return sorted(d["name"] for d in self.emu.droplets(tag))


@pytest.fixture
def env(tmp_path):
    e = Env(tmp_path)
    yield e
    e.emu.stop()


def wanted(managers=1, workers=2):
    return ([WantedHost(f"demo-manager-{i}", "manager") for i in range(1, managers + 1)]
            + [WantedHost(f"demo-worker-{i}", "worker") for i in range(1, workers + 1)])


def test_up_one_manager_two_workers(env):
    p = env.provider()
    hosts, changes = p.ensure(wanted(), env.note)
    assert [(h.name, h.role) for h in hosts] == [("demo-manager-1", "manager"),
                                                 ("demo-worker-1", "worker"),
                                                 ("demo-worker-2", "worker")]
    assert all(h.public_address.startswith("203.0.113.") for h in hosts)
    assert all(h.private_address.startswith("10.130.") for h in hosts)
    assert all(h.user == "root" and h.key_path == env.pub[:-4] for h in hosts)
    # one create request for the three droplets, then one tagged list per poll interval
    assert env.emu.count(*POST_DROPLETS) == 1
    polls = env.emu.list_polls(TAG)
    assert polls == 1 + math.ceil(7 / 2)                # the first look, then every 2 s until active
    assert env.emu.count("GET", "/v2/droplets/{id}") == 0   # never one request per droplet
    assert env.ft.sleeps == [2.0] * (polls - 1)
    assert env.names() == ["demo-manager-1", "demo-worker-1", "demo-worker-2"]
    assert env.names(role_tag("demo", "manager")) == ["demo-manager-1"]
    assert env.names(role_tag("demo", "worker")) == ["demo-worker-1", "demo-worker-2"]
    assert [c for c in changes if c.startswith("droplet")] == [
        "droplet demo-manager-1: created (manager, s-1vcpu-1gb, fra1)",
        "droplet demo-worker-1: created (worker, s-1vcpu-1gb, fra1)",
        "droplet demo-worker-2: created (worker, s-1vcpu-1gb, fra1)"]
    assert any(c.startswith("SSH key swarmsmith-demo: registered") for c in changes)
    assert any(c.startswith("VPC swarmsmith-demo: created") for c in changes)
    assert any(c.startswith("firewall swarmsmith-demo: created") for c in changes)
    state = p.state
    assert state["ssh_key"]["created"] and state["vpc"]["created"] and state["firewall"]["created"]
    assert {d["vpc_uuid"] for d in env.emu.droplets(TAG)} == {state["vpc"]["id"]}
    assert ("demo-worker-2", "active at " + hosts[2].public_address) in env.progress
    assert p.existing() == sorted(hosts, key=lambda h: h.name)


def test_second_ensure_creates_nothing(env):
    p = env.provider()
    first, _ = p.ensure(wanted())
    env.emu.reset_counts()
    again = env.provider(state=p.state)
    assert again.plan(wanted()) == []
    hosts, changes = again.ensure(wanted())
    assert changes == []
    assert hosts == first
    assert env.emu.count(*POST_DROPLETS) == 0
    assert not any(meth == "POST" for meth, _, _, _ in env.emu.log)
    assert again.state == p.state


def test_scaling_workers_two_to_four_creates_exactly_two(env):
    p = env.provider()
    before, _ = p.ensure(wanted(1, 2))
    ids = {d["name"]: d["id"] for d in env.emu.droplets(TAG)}
    env.emu.reset_counts()
    assert p.plan(wanted(1, 4)) == [
        "droplet demo-worker-3: create (worker, s-1vcpu-1gb, fra1)",
        "droplet demo-worker-4: create (worker, s-1vcpu-1gb, fra1)"]
    hosts, changes = p.ensure(wanted(1, 4))
    assert changes == ["droplet demo-worker-3: created (worker, s-1vcpu-1gb, fra1)",
                       "droplet demo-worker-4: created (worker, s-1vcpu-1gb, fra1)"]
    assert env.emu.count(*POST_DROPLETS) == 1
    assert len(env.emu.droplets(TAG)) == 5               # 1 manager + 4 workers
    assert {d["name"]: d["id"] for d in env.emu.droplets(TAG) if d["name"] in ids} == ids
    assert hosts[:3] == before


def test_creates_in_batches_of_ten(env):
    hosts, _ = env.provider().ensure(wanted(3, 22))
    assert len(hosts) == 25 and len({h.public_address for h in hosts}) == 25
    assert env.emu.count(*POST_DROPLETS) == 3


def test_429_and_500_survived(env):
    env.emu.inject_429(3, path="/v2/account/keys")
    env.emu.inject_5xx(2, method="GET", path="/v2/droplets")
    env.emu.inject_5xx(1, status=502, body="html", method="GET")
    env.emu.inject_429(1, method="POST", path="/v2/droplets")
    hosts, _ = env.provider().ensure(wanted())
    assert len(hosts) == 3
    assert env.names() == ["demo-manager-1", "demo-worker-1", "demo-worker-2"]
    assert env.emu.count(*POST_DROPLETS) == 2        # the 429, then the one that worked


def test_retry_bound_exhausted_is_a_clear_error(env):
    env.emu.inject_5xx(100, status=503, method="GET", path="/v2/droplets")
    with pytest.raises(DigitalOceanError) as err:
        env.provider().ensure(wanted())
    assert str(err.value) == ("DigitalOcean API: list droplets tagged swarmsmith:demo: still "
                              "failing after 6 attempts: HTTP 503 server_error: Server was "
                              "unable to give you a response.")
    assert err.value.exit_code == EXIT_FAILED
    assert env.emu.count(*POST_DROPLETS) == 0


def test_half_failed_create_is_reconciled_in_the_same_run(env):
    env.emu.fail_next_create(created=1)
    hosts, changes = env.provider().ensure(wanted())
    assert env.names() == ["demo-manager-1", "demo-worker-1", "demo-worker-2"]
    assert len(env.emu.droplets()) == 3                  # nothing untagged either
    assert env.emu.count(*POST_DROPLETS) == 2
    assert sorted(c for c in changes if c.startswith("droplet")) == [
        "droplet demo-manager-1: created (manager, s-1vcpu-1gb, fra1)",
        "droplet demo-worker-1: created (worker, s-1vcpu-1gb, fra1)",
        "droplet demo-worker-2: created (worker, s-1vcpu-1gb, fra1)"]
    assert len(hosts) == 3


def test_half_failed_create_then_rerun_gives_exactly_the_requested_droplets(env):
    env.emu.fail_next_create(created=2)
    env.emu.fail_next_create(created=0)
    env.emu.fail_next_create(created=0)
    p = env.provider()
    with pytest.raises(DigitalOceanError, match="may have been partly applied"):
        p.ensure(wanted(1, 4))
    assert env.names() == ["demo-manager-1", "demo-worker-1"]
    hosts, changes = env.provider(state=p.state).ensure(wanted(1, 4))
    names = [d["name"] for d in env.emu.droplets()]
    assert sorted(names) == ["demo-manager-1", "demo-worker-1", "demo-worker-2",
                             "demo-worker-3", "demo-worker-4"]
    assert len(names) == len(set(names))
    assert [h.name for h in hosts] == [w.name for w in wanted(1, 4)]
    # the droplets of the failed run got their role tags on the re-run
    assert env.names(role_tag("demo", "worker")) == ["demo-worker-1", "demo-worker-2",
                                                      "demo-worker-3", "demo-worker-4"]


def test_destroy_leaves_nothing_swarmsmith_created(env):
    p = env.provider()
    p.ensure(wanted())
    changes = p.destroy()
    model = env.emu.model.account
    assert model.droplets == {} and model.firewalls == {} and model.keys == {}
    assert [v["name"] for v in model.vpcs.values() if not v["default"]] == []
    assert not [t for t in model.tags if t.startswith("swarmsmith:")]
    assert p.state == {}
    assert "firewall swarmsmith-demo: deleted" in changes
    assert "VPC swarmsmith-demo: deleted" in changes
    assert sum(c.startswith("droplet ") for c in changes) == 3
    assert env.provider().destroy() == []               # nothing left to do


def test_destroy_keeps_what_the_user_brought(env, tmp_path):
    api = env.api()
    pub_line = open(env.pub).read().strip()
    # the same key, uploaded earlier with another comment: found by fingerprint, not duplicated
    user_key = api.create_ssh_key("laptop", pub_line.rsplit(" ", 1)[0] + " other-comment")
    vpc = api.create_vpc("my-net", "fra1")
    user_droplet = api.create_droplets(["unrelated"], region="fra1", size="s-1vcpu-1gb",
                                       image="ubuntu-24-04-x64", ssh_key_ids=[], tags=["mine"])[0]
    p = env.provider(vpc=vpc["id"])
    _, changes = p.ensure(wanted())
    assert not any(c.startswith("SSH key") for c in changes)
    assert p.state["ssh_key"] == {"id": user_key["id"], "created": False,
                                  "fingerprint": p.state["ssh_key"]["fingerprint"]}
    assert p.state["vpc"] == {"id": vpc["id"], "created": False}
    assert {d["vpc_uuid"] for d in env.emu.droplets(TAG)} == {vpc["id"]}
    p.destroy()
    model = env.emu.model.account
    assert list(model.keys) == [user_key["id"]]
    assert vpc["id"] in model.vpcs
    assert [d.id for d in model.droplets.values()] == [user_droplet.id]


def test_destroy_without_state_removes_our_named_firewall_and_vpc(env):
    env.provider().ensure(wanted())
    env.provider(state={}).destroy()
    model = env.emu.model.account
    assert model.droplets == {} and model.firewalls == {}
    assert [v for v in model.vpcs.values() if not v["default"]] == []


def test_extra_droplets_reported_and_removed_only_with_prune(env):
    p = env.provider()
    p.ensure(wanted(1, 3))
    hosts, changes = p.ensure(wanted(1, 2))
    assert len(hosts) == 3
    assert len(changes) == 1 and changes[0].startswith("droplet demo-worker-3 (id ")
    assert changes[0].endswith("not in the cluster file; kept (--prune removes it)")
    assert "demo-worker-3" in env.names()
    assert p.plan(wanted(1, 2), prune=True)[0].endswith(": destroy (not in the cluster file)")
    _, changes = p.ensure(wanted(1, 2), prune=True)
    assert changes[0].endswith(": destroyed (not in the cluster file)")
    assert env.names() == ["demo-manager-1", "demo-worker-1", "demo-worker-2"]


def test_missing_role_tag_is_repaired(env):
    p = env.provider()
    p.ensure(wanted())
    d = next(d for d in env.emu.droplets(TAG) if d["name"] == "demo-worker-2")
    env.emu.model.account.droplets[d["id"]].tags.remove(role_tag("demo", "worker"))
    assert p.plan(wanted()) == ["droplet demo-worker-2: add tag swarmsmith:demo:worker"]
    _, changes = p.ensure(wanted())
    assert changes == ["droplet demo-worker-2: tagged swarmsmith:demo:worker"]
    assert "demo-worker-2" in env.names(role_tag("demo", "worker"))


def test_firewall_opens_swarm_ports_only_between_cluster_droplets(env):
    p = env.provider(ssh_sources=["198.51.100.7/32"], published_ports=[80, "53/udp"])
    p.ensure(wanted())
    (fw,) = env.emu.model.account.firewalls.values()
    assert fw["name"] == "swarmsmith-demo" and fw["tags"] == [TAG]
    rules = {(r["protocol"], r["ports"]): r["sources"] for r in fw["inbound_rules"]}
    for key in [("tcp", "2377"), ("tcp", "7946"), ("udp", "7946"), ("udp", "4789")]:
        assert rules[key]["tags"] == [TAG] and rules[key]["addresses"] == []
    assert rules[("tcp", "22")]["addresses"] == ["198.51.100.7/32"]
    assert rules[("tcp", "80")]["addresses"] == ["0.0.0.0/0", "::/0"]
    assert rules[("udp", "53")]["addresses"] == ["0.0.0.0/0", "::/0"]
    assert len(rules) == 7
    assert {r["ports"] for r in fw["outbound_rules"] if r["protocol"] != "icmp"} == {"0"}
    # changing published ports updates the firewall in place
    env.emu.reset_counts()
    p2 = env.provider(state=p.state, ssh_sources=["198.51.100.7/32"], published_ports=[443])
    assert p2.plan(wanted()) == ["firewall swarmsmith-demo: update rules"]
    _, changes = p2.ensure(wanted())
    assert changes == ["firewall swarmsmith-demo: rules updated"]
    assert env.emu.count("PUT", "/v2/firewalls/{fw}") == 1
    assert env.emu.count("POST", "/v2/firewalls") == 0
    (fw,) = env.emu.model.account.firewalls.values()
    assert ("tcp", "443") in {(r["protocol"], r["ports"]) for r in fw["inbound_rules"]}
    assert ("tcp", "80") not in {(r["protocol"], r["ports"]) for r in fw["inbound_rules"]}


def test_firewall_can_be_disabled(env):
    env.provider(firewall=False).ensure(wanted())
    assert env.emu.model.account.firewalls == {}


def test_activation_deadline(env):
    env.emu.set_activation_delay(float("inf"), name="demo-worker-2")
    with pytest.raises(TimeoutError_) as err:
        env.provider(wait_timeout=30, poll_interval=5).ensure(wanted())
    assert str(err.value) == "droplets not active after 30s: demo-worker-2 (new)"
    assert err.value.exit_code == EXIT_TIMED_OUT
    assert env.emu.list_polls(TAG) == 1 + 30 // 5         # one tagged list per interval
    assert env.ft.now - 1000.0 == pytest.approx(30)


def test_waits_until_ssh_answers(env):
    calls: dict[str, int] = {}

    def ssh_check(address, port):
        calls[address] = calls.get(address, 0) + 1
        return calls[address] >= 3 and port == 22

    hosts, _ = env.provider(ssh_check=ssh_check).ensure(wanted(), env.note)
    assert sorted(calls.values()) == [3, 3, 3]
    assert {n for n, msg in env.progress if msg == "SSH answers"} == {h.name for h in hosts}


def test_ssh_deadline_is_unreachable_error(env):
    with pytest.raises(UnreachableError) as err:
        env.provider(ssh_check=lambda a, p: a != "203.0.113.3", ssh_timeout=20).ensure(wanted())
    assert err.value.exit_code == EXIT_UNREACHABLE
    assert str(err.value) == "SSH did not answer within 20s on demo-worker-1 (203.0.113.3:22)"


def test_tcp_ssh_check_reads_the_banner():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    port = srv.getsockname()[1]

    def serve():
        conn, _ = srv.accept()
        conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")
        conn.close()
    t = threading.Thread(target=serve)
    t.start()
    assert tcp_ssh_check("127.0.0.1", port, timeout=2) is True
    t.join()
    srv.close()
    assert tcp_ssh_check("127.0.0.1", port, timeout=1) is False


def test_token_never_appears_in_output_logs_errors_or_state(env, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    env.emu.inject_429(2)
    env.emu.fail_next_create(created=1)
    p = env.provider()
    hosts, changes = p.ensure(wanted(), lambda n, m: print(n, m))
    texts = [json.dumps(p.state), json.dumps([h.as_dict() for h in hosts]), *changes,
             repr(p), repr(p.api), *p.plan(wanted()), *p.destroy()]
    bad = DigitalOceanProvider("demo", settings(env.pub), None, clock=env.ft.clock,
                               sleep=env.ft.sleep, ssh_check=None,
                               env={"DIGITALOCEAN_TOKEN": TOKEN + "x",
                                    "DIGITALOCEAN_END_POINT": env.emu.url})
    with pytest.raises(DigitalOceanError) as err:
        bad.ensure(wanted())
    texts += [str(err.value), repr(err.value)]
    out = capsys.readouterr()
    texts += [out.out, out.err, caplog.text]
    assert "retry" in caplog.text and "demo-worker-1" in out.out
    for text in texts:
        assert TOKEN not in text


def test_missing_token_is_bad_input(env):
    p = DigitalOceanProvider("demo", settings(env.pub), None, env={}, ssh_check=None)
    with pytest.raises(InputError, match="DIGITALOCEAN_TOKEN") as err:
        p.plan(wanted())
    assert err.value.exit_code == EXIT_BAD_INPUT


def test_plan_reads_only(env):
    p = env.provider()
    assert p.plan(wanted()) == [
        f"SSH key swarmsmith-demo: register {env.pub}",
        "VPC swarmsmith-demo: create in fra1",
        "droplet demo-manager-1: create (manager, s-1vcpu-1gb, fra1)",
        "droplet demo-worker-1: create (worker, s-1vcpu-1gb, fra1)",
        "droplet demo-worker-2: create (worker, s-1vcpu-1gb, fra1)",
        "firewall swarmsmith-demo: create (WARNING: SSH open to the whole internet, 0.0.0.0/0, "
        "::/0; set digitalocean.ssh_sources to your own addresses)"]
    assert {meth for meth, _, _, _ in env.emu.log} == {"GET"}


def test_plan_flags_ssh_from_anywhere_only_when_open(env):
    closed = env.provider(ssh_sources=["198.51.100.7/32"]).plan(wanted())
    assert closed[-1] == "firewall swarmsmith-demo: create"
    half = env.provider(ssh_sources=["198.51.100.7/32", "0.0.0.0/0"]).plan(wanted())
    assert "WARNING: SSH open to the whole internet, 0.0.0.0/0;" in half[-1]


def test_bad_wanted_and_cluster_names(env):
    with pytest.raises(InputError, match="unique"):
        env.provider().ensure([WantedHost("a", "worker"), WantedHost("a", "worker")])
    with pytest.raises(InputError, match="role"):
        env.provider().ensure([WantedHost("a", "boss")])
    with pytest.raises(InputError, match="cluster name"):
        DigitalOceanProvider("Bad_Name", settings(env.pub), None)
    assert env.emu.total_requests() == 0


@pytest.mark.parametrize("change, message", [
    ({"region": 5}, "cluster.yml: digitalocean.region: expected a string"),
    ({"size": None}, "cluster.yml: digitalocean.size: expected a string"),
    ({"colour": "red"}, "cluster.yml: digitalocean.colour: unknown key"),
    ({"monitoring": "yes"}, "cluster.yml: digitalocean.monitoring: expected true or false"),
    ({"vpc": "mine"}, "cluster.yml: digitalocean.vpc: expected 'create', 'default' or a VPC id"),
    ({"vpc": "default", "vpc_ip_range": "10.1.0.0/20"},
     "cluster.yml: digitalocean.vpc_ip_range: only used with vpc: create"),
    ({"vpc_ip_range": "8.8.0.0/20"}, "cluster.yml: digitalocean.vpc_ip_range: 8.8.0.0/20 is outside the private ranges"),
    ({"tags": ["ok", "no spaces"]}, "cluster.yml: digitalocean.tags[1]: 'no spaces' is not a tag"),
    ({"ssh_sources": ["10.0.0.0/8", "nowhere"]},
     "cluster.yml: digitalocean.ssh_sources: 'nowhere' is not an address"),
    ({"ssh_sources": []}, "cluster.yml: digitalocean.ssh_sources: expected a non-empty list"),
    ({"published_ports": [80, "99999"]},
     "cluster.yml: digitalocean.published_ports[1]: '99999': ports run from 1 to 65535"),
    ({"published_ports": ["80/sctp"]},
     "cluster.yml: digitalocean.published_ports[0]: '80/sctp' is not a port"),
    ({"wait_timeout": 0}, "cluster.yml: digitalocean.wait_timeout: expected a number of seconds from 0 to 86400"),
    ({"ssh_key": "/nonexistent/key.pub"},
     "cluster.yml: digitalocean.ssh_key: cannot read public key /nonexistent/key.pub"),
])
def test_validate_settings_errors(env, change, message):
    s = {**settings(env.pub), **change}
    with pytest.raises(InputError) as err:
        validate_settings(s, "cluster.yml")
    assert str(err.value).startswith(message)
    assert err.value.exit_code == EXIT_BAD_INPUT


def test_validate_settings_required_and_not_a_key(env, tmp_path):
    s = settings(env.pub)
    del s["image"]
    with pytest.raises(InputError, match="^cluster.yml: do.image: required$"):
        validate_settings(s, "cluster.yml", "do")
    junk = tmp_path / "junk.pub"
    junk.write_text("hello world\n")
    with pytest.raises(InputError, match="is not an OpenSSH public key"):
        validate_settings(settings(str(junk)), "cluster.yml")


def test_validate_settings_normalises(env, tmp_path):
    out = validate_settings(settings("id_ed25519.pub", published_ports=[
        80, "53/udp", "8000-8010", {"port": 9000, "protocol": "udp", "sources": ["10.0.0.0/8"]}]),
        "cluster.yml", base_dir=str(tmp_path))
    assert out["ssh_key"] == env.pub and out["ssh_private_key"] == env.pub[:-4]
    assert out["published_ports"] == [
        {"protocol": "tcp", "ports": "80", "sources": ["0.0.0.0/0", "::/0"]},
        {"protocol": "udp", "ports": "53", "sources": ["0.0.0.0/0", "::/0"]},
        {"protocol": "tcp", "ports": "8000-8010", "sources": ["0.0.0.0/0", "::/0"]},
        {"protocol": "udp", "ports": "9000", "sources": ["10.0.0.0/8"]}]
    assert out["vpc"] == "create" and out["poll_interval"] == 2.0
    inbound, outbound = firewall_rules("demo", out)
    assert len(inbound) == 4 + 1 + 4 and len(outbound) == 3


def test_tags_helpers():
    assert cluster_tag("demo") == "swarmsmith:demo"
    assert role_tag("demo", "manager") == "swarmsmith:demo:manager"


def test_destroy_confirms_nothing_tagged_remains(env, monkeypatch):
    p = env.provider(wait_timeout=10, poll_interval=5)
    p.ensure(wanted(1, 1))
    # the API accepts the deletes but the droplets stay listed
    monkeypatch.setattr(env.emu.model, "delete_droplet", lambda droplet_id: (204, None))
    with pytest.raises(TimeoutError_, match="droplets still listed after destroy: "
                                            "demo-manager-1, demo-worker-1"):
        p.destroy()
    assert env.emu.list_polls(TAG) >= 3
    assert env.emu.model.account.firewalls                 # nothing else was torn down yet


# --- the API as it really behaves: errored actions, list lag, lost answers, budgets ----------
def test_errored_create_action_fails_within_one_poll_with_the_droplet_named(env):
    env.emu.fail_action("demo-worker-1", after=3)      # the others turn active after 7 s
    start = env.ft.clock()
    with pytest.raises(SwarmsmithError) as err:
        env.provider().ensure(wanted(), env.note)
    action = 2000000002                                 # the second droplet's create action
    assert str(err.value) == (
        f"droplet demo-worker-1: create action {action} errored at DigitalOcean (destroyed; a "
        "re-run creates it again; still being created: demo-manager-1, demo-worker-2)")
    assert env.ft.clock() - start <= 3 + 2               # noticed at the first poll after 3 s
    assert env.names() == ["demo-manager-1", "demo-worker-2"]   # the errored one is gone
    assert ("demo-worker-1", f"create action {action} errored; destroying the droplet") \
        in env.progress
    # one look at the recent actions per poll, not one request per droplet
    assert env.emu.count("GET", "/v2/actions") == env.emu.list_polls(TAG) - 1
    assert env.emu.count("GET", "/v2/actions/{action}") == 0
    hosts, _ = env.provider(state=env.saved[-1]).ensure(wanted())
    assert [h.name for h in hosts] == ["demo-manager-1", "demo-worker-1", "demo-worker-2"]


def test_lost_create_answer_under_list_lag_makes_no_duplicate(env):
    env.emu.set_list_lag(4)                              # two poll intervals
    env.emu.fail_next_create(created=3)                  # all made, the answer lost (500)
    hosts, changes = env.provider().ensure(wanted())
    names = [d["name"] for d in env.emu.droplets()]
    assert sorted(names) == ["demo-manager-1", "demo-worker-1", "demo-worker-2"]
    assert env.emu.count(*POST_DROPLETS) == 1
    assert len(hosts) == 3
    assert "creating" not in env.saved[-1]               # records dropped once active


def test_killed_after_sending_the_create_rerun_waits_for_the_list(env):
    env.emu.set_list_lag(4)

    class Killed(BaseException):
        pass

    class DiesAfterCreate:
        def __init__(self, api):
            self.api = api

        def __getattr__(self, name):
            return getattr(self.api, name)

        def create_droplets(self, *a, **kw):
            self.api.create_droplets(*a, **kw)
            raise Killed()                               # the run is killed before the answer

    with pytest.raises(Killed):
        env.provider(api=DiesAfterCreate(env.api())).ensure(wanted())
    state = env.saved[-1]                                # on disk before the request went out
    assert sorted(state["creating"]) == ["demo-manager-1", "demo-worker-1", "demo-worker-2"]
    env.ft.sleep(1)
    assert env.emu.droplets(TAG) == []                   # not listed yet
    p = env.provider(state=state)
    assert "droplet demo-worker-1: wait (a create was sent; not listed yet)" in p.plan(wanted())
    hosts, _ = p.ensure(wanted())
    assert env.emu.count(*POST_DROPLETS) == 1
    assert sorted(d["name"] for d in env.emu.droplets()) == [h.name for h in hosts]


def test_create_record_older_than_list_lag_is_created_again(env):
    state = {"creating": {"demo-worker-1": {"at": env.ft.clock() - 31}}}
    hosts, changes = env.provider(state=state, list_lag=30).ensure(wanted())
    assert env.emu.count(*POST_DROPLETS) == 1 and len(hosts) == 3
    assert env.emu.list_polls(TAG) == 1 + math.ceil(7 / 2)    # no wait for the old record


def test_burst_429_retry_after_honoured_by_up(env):
    env.emu.inject_429(2, retry_after=13, method="POST", path="/v2/droplets")
    hosts, _ = env.provider().ensure(wanted())
    assert len(hosts) == 3 and env.emu.count(*POST_DROPLETS) == 3
    assert env.ft.sleeps.count(13.0) == 2


def test_exhausted_hourly_budget_fails_up_with_the_reset_time(env):
    env.emu.hourly_limit = 20
    env.emu.use_budget(20)
    env.ft.sleep(600)
    with pytest.raises(RateLimitExhausted) as err:
        env.provider().ensure(wanted())
    assert "the rate limit of 20 requests an hour is used up; requests are accepted again " \
           "from 1970-01-01 01:16:40 UTC (in 3000 s)" in str(err.value)
    assert err.value.exit_code == EXIT_FAILED
    assert env.emu.total_requests() == 1                  # refused once, not retried for minutes


@pytest.mark.parametrize("overrides", [{}, {"vpc": "default", "firewall": False},
                                       {"image": 190000001, "user_data": "#!/bin/sh\n"}])
def test_request_bodies_match_the_schema_tables_and_carry_no_null(env, overrides):
    p = env.provider(**overrides)
    p.ensure(wanted())
    p.destroy()
    bodies = [(meth, tmpl, b) for meth, tmpl, b in env.emu.bodies if b != {}]
    assert {(meth, tmpl) for meth, tmpl, _ in bodies} >= {("POST", "/v2/droplets"),
                                                         ("POST", "/v2/tags/{tag}/resources")}
    assert [(tmpl, nulls(b)) for _, tmpl, b in bodies if nulls(b)] == []
    assert [p for meth, tmpl, b in bodies for p in problems(meth, tmpl, b)] == []
    assert all(status < 400 for _, _, _, status in env.emu.log)


def test_up_hands_the_provider_a_state_saver(tmp_path):
    from inventory import clusterfile
    from provision.hosts import providers
    write_public_key(tmp_path)
    path = tmp_path / "cluster.yml"
    path.write_text("name: dox\nprovider: digitalocean\nmanagers: 1\ndigitalocean: {region: fra1, "
                    "size: s-1vcpu-1gb, image: 190000001, ssh_key: id_ed25519.pub}\n")
    saved = []
    p = providers.make(clusterfile.load(str(path)), {}, on_state=saved.append)
    assert p.on_state == saved.append and p.settings["image"] == 190000001


def test_down_right_after_answered_creates_deletes_unlisted_droplets_by_id(env):
    env.emu.set_list_lag(30)
    made = env.api().create_droplets([w.name for w in wanted()], region="fra1",
                                      size="s-1vcpu-1gb", image="ubuntu-24-04-x64",
                                      ssh_key_ids=[], tags=[TAG])
    assert env.emu.droplets(TAG) == []                  # not listed yet
    state = {"creating": {d.name: {"at": env.ft.clock(), "id": d.id} for d in made}}
    env.provider(state=state).destroy()
    assert env.emu.model.account.droplets == {}


def test_down_after_a_killed_create_waits_for_the_list(env):
    env.emu.set_list_lag(6)
    env.api().create_droplets([w.name for w in wanted()], region="fra1", size="s-1vcpu-1gb",
                              image="ubuntu-24-04-x64", ssh_key_ids=[], tags=[TAG])
    state = {"creating": {w.name: {"at": env.ft.clock()} for w in wanted()}}   # no answer
    p = env.provider(state=state)
    p.destroy()
    assert env.emu.model.account.droplets == {}
    assert "creating" not in p.state


# --- the account, read before anything costs money --------------------------------------------
def test_droplet_limit_refused_by_plan_and_up_before_any_create(tmp_path):
    e = Env(tmp_path, fast=False, droplet_limit=5)
    try:
        for call in (lambda p: p.plan(wanted(3, 5)), lambda p: p.ensure(wanted(3, 5))):
            with pytest.raises(InputError) as err:
                call(e.provider())
            assert err.value.exit_code == EXIT_BAD_INPUT
            assert str(err.value) == (
                "8 droplet(s) to create, but the DigitalOcean account's droplet limit is 5 and "
                "it has 0 droplet(s) already (5 free); nothing was created: ask DigitalOcean to "
                "raise the droplet limit (control panel or support), or ask for fewer droplets "
                "(managers, workers)")
        assert [meth for meth, *_ in e.emu.log if meth != "GET"] == []   # no key, VPC, droplet
        # droplets the account already has count; those of this cluster need no new slot
        e.emu.set_account(droplet_limit=9)
        e.api().create_droplets(["someone-else", "another"], region="fra1", size="s-1vcpu-1gb",
                                image="ubuntu-24-04-x64", ssh_key_ids=[], tags=["theirs"])
        e.ft.sleep(10)                                  # listed (and counted) after the lag
        with pytest.raises(InputError, match=r"limit is 9 and it has 2 droplet\(s\) already "
                                             r"\(7 free\)"):
            e.provider().ensure(wanted(3, 5))
        e.provider().ensure(wanted(3, 4))                                 # 7 fit
        assert e.provider().plan(wanted(3, 4)) == []                      # and stay fitting
    finally:
        e.emu.stop()


@pytest.mark.parametrize("account, message", [
    ({"status": "locked", "status_message": "billing hold"},
     "the DigitalOcean account is locked (billing hold); nothing was created"),
    ({"email_verified": False}, "the DigitalOcean account's email address is not verified; "
                                "nothing was created"),
])
def test_locked_account_or_unverified_email_refused_before_anything(env, account, message):
    env.emu.set_account(**account)
    for call in (lambda p: p.plan(wanted()), lambda p: p.ensure(wanted())):
        with pytest.raises(InputError) as err:
            call(env.provider())
        assert str(err.value).startswith(message) and err.value.exit_code == EXIT_BAD_INPUT
    assert {meth for meth, *_ in env.emu.log} == {"GET"}


def test_account_warning_is_shown_with_its_message(env):
    env.emu.set_account(status="warning", status_message="Your payment method expires soon")
    note = "DigitalOcean account warning: Your payment method expires soon"
    assert env.provider().plan(wanted())[0] == note
    p = env.provider()
    hosts, _ = p.ensure(wanted(), env.note)
    assert len(hosts) == 3 and p.warnings == [note]
    assert ("digitalocean", note) in env.progress


# --- actions by resource_id, lost answers, droplets made twice ---------------------------------
def test_actions_in_reverse_order_still_name_the_errored_droplet(env):
    env.emu.reverse_create_links()
    env.emu.fail_action("demo-worker-1", after=3)
    with pytest.raises(SwarmsmithError) as err:
        env.provider().ensure(wanted(1, 3), env.note)
    action = next(a.id for a in env.emu.model.account.actions.values()
                  if a.type == "create" and a.status == "errored")
    assert str(err.value).startswith(
        f"droplet demo-worker-1: create action {action} errored at DigitalOcean (destroyed;")
    assert env.names() == ["demo-manager-1", "demo-worker-2", "demo-worker-3"]


def test_lost_answer_plus_errored_droplet_fails_within_one_poll_interval(tmp_path):
    e = Env(tmp_path, fast=False)                       # lists lag 10 s behind a create
    try:
        e.emu.fail_next_create(created=3)               # all made, the answer lost
        e.emu.fail_action("demo-worker-1")              # its create errors at once
        p = e.provider(poll_interval=2)
        start = e.ft.clock()
        with pytest.raises(SwarmsmithError, match=r"^droplet demo-worker-1: create action \d+ "
                                                  "errored at DigitalOcean"):
            p.ensure(wanted(), e.note)
        assert e.ft.clock() - start <= 2                # one poll, not the 600 s wait
        assert e.emu.count(*POST_DROPLETS) == 1         # the lost create was not sent again
        assert sorted(d["name"] for d in e.emu.droplets(lagged=False)) == [
            "demo-manager-1", "demo-worker-2"]
        assert any(m.startswith("found by its create action") for n, m in e.progress
                   if n == "demo-manager-1")
    finally:
        e.emu.stop()


def _exactly_wanted(emu):
    names = [d["name"] for d in emu.droplets(lagged=False)]
    return sorted(names) == ["demo-manager-1", "demo-worker-1", "demo-worker-2"]


def test_five_minute_lag_and_a_lost_answer_make_one_droplet_per_name(tmp_path):
    e = Env(tmp_path, fast=False, list_lag=300)
    try:
        e.emu.fail_next_create(created=3)
        hosts, _ = e.provider().ensure(wanted())
        assert e.emu.count(*POST_DROPLETS) == 1 and _exactly_wanted(e.emu)
        assert len(hosts) == 3 and all(h.public_address for h in hosts)
        assert e.ft.clock() - 1000 < 60                 # no waiting for the list to catch up
    finally:
        e.emu.stop()


def test_five_minute_lag_everywhere_the_copy_in_the_swarm_is_kept_by_the_next_up(tmp_path):
    e = Env(tmp_path, fast=False)
    try:
        e.emu.set_list_lag(300, actions=True)           # not even the action history shows it
        e.emu.fail_next_create(created=3)
        p = e.provider()
        hosts, _ = p.ensure(wanted())                   # waits list_lag (60 s), creates again
        assert e.emu.count(*POST_DROPLETS) == 2
        handed = {h.name: h.public_address for h in hosts}
        e.ft.sleep(300)                                 # the lost create's droplets show up
        again = e.provider(state=e.saved[-1])
        assert sum(" a second copy; destroy " in line for line in again.plan(wanted())) == 3
        hosts2, changes = again.ensure(wanted(), e.note)
        assert _exactly_wanted(e.emu)
        assert {h.name: h.public_address for h in hosts2} == handed   # the ones in the swarm
        copies = [c for c in changes if "a second copy" in c]
        assert len(copies) == 3 and all(c.endswith("kept (in use)") for c in copies)
        assert e.emu.count(*POST_DROPLETS) == 2
    finally:
        e.emu.stop()


def test_a_copy_that_shows_up_while_waiting_is_removed_at_that_poll(tmp_path):
    # 90 s of lag (beyond the 60 s window), droplets active after 45 s: the first copies are
    # listed (and active) while the second ones are still being made
    e = Env(tmp_path, fast=False)
    try:
        e.emu.set_activation_delay(45)
        e.emu.set_list_lag(90, actions=True)
        e.emu.fail_next_create(created=3)
        hosts, changes = e.provider(poll_interval=5).ensure(wanted(), e.note)
        assert e.emu.count(*POST_DROPLETS) == 2 and _exactly_wanted(e.emu)
        copies = [c for c in changes if "a second copy" in c]
        assert len(copies) == 3 and all(c.endswith("kept (active)") for c in copies)
        assert all(", run-" in c for c in copies)            # which run made the copy
        assert len(hosts) == 3
    finally:
        e.emu.stop()


def test_droplets_carry_the_run_tag_and_down_removes_it(env):
    p = env.provider(run_id="feed1234")
    p.ensure(wanted())
    assert {t for d in env.emu.droplets(TAG) for t in d["tags"]} >= {"swarmsmith:demo:run-feed1234"}
    assert "swarmsmith:demo:run-feed1234" in env.emu.model.account.tags
    p.destroy()
    assert not [t for t in env.emu.model.account.tags if t.startswith("swarmsmith:")]


def test_limit_reached_during_the_run_names_the_way_out(env):
    env.emu.set_account(droplet_limit=3)

    class OthersCreateMeanwhile:
        def __init__(self, api, emu_api):
            self.api, self.emu_api = api, emu_api

        def __getattr__(self, name):
            return getattr(self.api, name)

        def create_ssh_key(self, *a, **kw):         # after the account check, before ours
            self.emu_api.create_droplets(["theirs"], region="fra1", size="s-1vcpu-1gb",
                                         image="ubuntu-24-04-x64", ssh_key_ids=[], tags=["x"])
            return self.api.create_ssh_key(*a, **kw)

    p = env.provider(api=OthersCreateMeanwhile(env.api(), env.api()))
    with pytest.raises(SwarmsmithError) as err:
        p.ensure(wanted())
    assert "will exceed your droplet limit (droplets were made in the account since this run " \
           "checked its limit; ask DigitalOcean to raise the droplet limit" in str(err.value)


def test_up_and_down_under_a_long_list_lag(tmp_path):
    e = Env(tmp_path, fast=False, list_lag=300)
    try:
        hosts, _ = e.provider().ensure(wanted())     # active by id, before any list shows them
        assert len(hosts) == 3 and e.emu.droplets(TAG) == []
        assert e.emu.count("GET", "/v2/droplets/{id}") == 3          # once each, when active
        e.provider(state=e.saved[-1]).destroy()      # by the ids recorded as handed out
        assert e.emu.model.account.droplets == {}
    finally:
        e.emu.stop()


def test_a_refused_create_leaves_no_record_to_wait_for(env):
    env.emu.inject(422, 1, method="POST", path="/v2/droplets")
    with pytest.raises(DigitalOceanError, match="HTTP 422"):
        env.provider().ensure(wanted())
    assert "creating" not in env.saved[-1]
    start = env.ft.clock()
    env.provider(state=env.saved[-1]).ensure(wanted())
    assert env.ft.clock() - start < 60                   # no wait for names never made


def test_errored_create_found_through_the_droplets_own_actions_when_the_history_lags(tmp_path):
    e = Env(tmp_path, fast=False)
    try:
        e.emu.set_list_lag(300, actions=True)
        e.emu.fail_action("demo-worker-6", after=1)
        with pytest.raises(SwarmsmithError, match="^droplet demo-worker-6: create action"):
            e.provider(poll_interval=2).ensure(wanted(1, 7))
        # five droplets' own actions a poll, taking turns: the eighth is read at the second poll
        assert e.emu.count("GET", "/v2/droplets/{id}/actions") <= 2 * 5
        assert e.ft.clock() - 1000 <= 2 * 2
    finally:
        e.emu.stop()


def test_ssh_key_listing_limit_waited_out(tmp_path):
    e = Env(tmp_path, fast=False)                     # 10 GET /v2/account/keys a minute
    try:
        api = e.api()
        for _ in range(10):
            api.list_ssh_keys()
        hosts, _ = e.provider().ensure(wanted())
        assert len(hosts) == 3
        assert [s for meth, tmpl, _, s in e.emu.log if tmpl == "/v2/account/keys"
                and meth == "GET"][-2:] == [429, 200]
        assert 60.0 in e.ft.sleeps                    # what retry-after said, once
    finally:
        e.emu.stop()
