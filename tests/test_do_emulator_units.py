"""Conformance: the real python-digitalocean 1.17.0, over HTTP, against the emulator."""
from __future__ import annotations

import os
import threading

import pytest
import requests

from tests.do_emulator import DOEmulator, key_fingerprint, match_route
from tests.fakes.clock import FakeClock

TOKEN = "dop_v1_conformance_token_0123456789"
# the library's Firewall.create uses jsonpickle, which announces a change in its next major version
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:digitalocean.Firewall")


@pytest.fixture
def ft():
    return FakeClock()


@pytest.fixture
def emu(ft, monkeypatch):
    with DOEmulator(TOKEN, fast=True, clock=ft.clock) as e:
        # the library only honours the environment variable (constructor end_point is not
        # passed on to the objects it creates)
        monkeypatch.setenv("DIGITALOCEAN_END_POINT", e.url)
        global _emu
        _emu = e
        yield e


@pytest.fixture
def do():
    import digitalocean
    return digitalocean


def create3(do, names=("a-1", "a-2", "a-3"), tags=("t",), emu=None):
    # the library sends "vpc_uuid": null unless given one, which the API's schema refuses
    return do.Droplet.create_multiple(token=TOKEN, names=list(names), size="s-1vcpu-1gb",
                                      image="ubuntu-24-04-x64", region="fra1", tags=list(tags),
                                      vpc_uuid=(emu or _emu).default_vpc("fra1"))


def test_listens_on_loopback_only_and_url_keeps_trailing_slash(emu):
    assert emu._server.server_address[0] == "127.0.0.1"
    assert emu.url.startswith("http://127.0.0.1:") and emu.url.endswith("/v2/")


def test_routes_strip_trailing_slash():
    assert match_route("GET", "/v2/droplets/")[:2] == ("/v2/droplets", "list_droplets")
    assert match_route("GET", "/v2/droplets/7/actions/")[0] == "/v2/droplets/{id}/actions"
    assert match_route("DELETE", "/v2/firewalls/abc/")[1] == "delete_firewall"
    assert match_route("GET", "/v2/nothing")[0] == "?"


def test_create_multiple_new_then_active_with_networks(emu, ft, do):
    emu.set_activation_delay(30)
    made = create3(do)
    assert [d.name for d in made] == ["a-1", "a-2", "a-3"]
    # upstream defect: every droplet gets the first action id
    assert len({tuple(d.action_ids) for d in made}) == 1
    m = do.Manager(token=TOKEN)
    before = m.get_all_droplets(tag_name="t")
    assert {d.status for d in before} == {"new"}
    assert all(d.locked for d in before)
    assert all(d.networks == {"v4": [], "v6": []} and d.ip_address is None for d in before)
    ft.sleep(31)
    after = m.get_all_droplets(tag_name="t")
    assert {d.status for d in after} == {"active"}
    assert not any(d.locked for d in after)
    assert [d.ip_address for d in after] == ["203.0.113.2", "203.0.113.3", "203.0.113.4"]
    assert all(d.private_ip_address.startswith("10.130.") for d in after)
    assert emu.count("POST", "/v2/droplets") == 1
    assert emu.list_polls("t") == 2


def test_pagination_follows_next_links_with_small_per_page(emu, do):
    create3(do, names=[f"p-{i}" for i in range(1, 6)])
    droplets = do.Manager(token=TOKEN).get_all_droplets(params={"per_page": 2}, tag_name="t")
    assert sorted(d.name for d in droplets) == [f"p-{i}" for i in range(1, 6)]
    assert emu.count("GET", "/v2/droplets") == 3          # pages 1, 2, 3
    pages = [q.get("page") for meth, tmpl, q, _ in emu.log if tmpl == "/v2/droplets" and meth == "GET"]
    assert pages == [None, "2", "3"]


def test_page_links_and_meta_shape(emu, do):
    create3(do, names=[f"p-{i}" for i in range(1, 6)])
    r = requests.get(emu.url + "droplets?per_page=2&page=2&tag_name=t",
                     headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
    body = r.json()
    assert body["meta"] == {"total": 5}
    assert set(body["links"]["pages"]) == {"first", "prev", "next", "last"}
    assert "page=3" in body["links"]["pages"]["next"] and "tag_name=t" in body["links"]["pages"]["next"]
    for h in ("Ratelimit-Limit", "Ratelimit-Remaining", "Ratelimit-Reset"):
        assert r.headers[h].isdigit()


def test_more_than_ten_names_is_rejected(emu, do):
    with pytest.raises(do.DataReadError, match="names: more than 10 items"):
        create3(do, names=[f"n-{i}" for i in range(11)])
    assert emu.droplets() == []


def test_single_create_load_actions_and_destroy(emu, ft, do):
    emu.set_activation_delay(10)
    d = do.Droplet(token=TOKEN, name="solo", region="fra1", size_slug="s-1vcpu-1gb",
                   image="ubuntu-24-04-x64", tags=["t"], vpc_uuid=emu.default_vpc("fra1"))
    d.create()
    assert d.id and len(d.action_ids) == 1
    d.load()
    assert d.status == "new" and d.networks["v4"] == []
    actions = d.get_actions()
    assert [(a.type, a.status) for a in actions] == [("create", "in-progress")]
    ft.sleep(10)
    assert do.Manager(token=TOKEN).get_action(d.action_ids[0]).status == "completed"
    assert d.get_actions()[0].status == "completed"
    loaded = do.Manager(token=TOKEN).get_droplet(d.id)
    assert loaded.status == "active" and loaded.ip_address
    assert d.destroy() is True
    with pytest.raises(do.NotFoundError):
        do.Manager(token=TOKEN).get_droplet(d.id)


def test_404_and_error_bodies(emu, do):
    with pytest.raises(do.NotFoundError):
        do.Manager(token=TOKEN).get_droplet(424242)
    r = requests.get(emu.url + "droplets/424242", headers={"Authorization": f"Bearer {TOKEN}"},
                     timeout=5)
    assert r.status_code == 404 and set(r.json()) >= {"id", "message"}
    assert r.json()["id"] == "not_found"


def test_bearer_token_checked(emu, do):
    with pytest.raises(do.DataReadError, match="Unable to authenticate"):
        do.Manager(token="wrong").get_all_droplets()
    assert emu.count("GET", "/v2/droplets") == 1


def test_injected_429_looks_like_digitalocean(emu, do):
    emu.inject_429(1)
    with pytest.raises(do.DataReadError, match="API rate limit exceeded"):
        do.Manager(token=TOKEN).get_all_droplets()
    r = requests.get(emu.url + "droplets", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
    assert r.status_code == 200
    emu.inject_429(1)
    r = requests.get(emu.url + "droplets", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
    assert r.status_code == 429
    assert r.json()["id"] == "too_many_requests"
    assert r.headers["Ratelimit-Remaining"] == "0"


def test_rate_limit_headers_stored_by_library(emu, do):
    m = do.Manager(token=TOKEN)
    m.get_all_droplets()
    assert m.ratelimit_limit == "5000" and int(m.ratelimit_remaining) < 5000


def test_real_per_minute_limit(ft, monkeypatch, do):
    with DOEmulator(TOKEN, fast=True, clock=ft.clock, per_minute_limit=3) as e:
        monkeypatch.setenv("DIGITALOCEAN_END_POINT", e.url)
        m = do.Manager(token=TOKEN)
        for _ in range(3):
            m.get_all_droplets()
        with pytest.raises(do.DataReadError, match="rate limit"):
            m.get_all_droplets()


def test_half_failed_create(emu, do):
    emu.fail_next_create(created=2)
    with pytest.raises(do.DataReadError, match="unable to give you a response"):
        create3(do)
    assert [d["name"] for d in emu.droplets("t")] == ["a-1", "a-2"]


def test_fault_bodies_html_and_without_id(emu, do):
    emu.inject_5xx(1, status=502, body="html")
    with pytest.raises(do.baseapi.JSONReadError):
        do.Manager(token=TOKEN).get_all_droplets()
    emu.inject_5xx(1, body="noid")
    with pytest.raises(IndexError):          # the library's defect 3, reproduced faithfully
        do.Manager(token=TOKEN).get_all_droplets()


def test_ssh_keys(emu, do, tmp_path):
    from tests.do_emulator.testing import write_public_key
    pub = open(write_public_key(tmp_path)).read().strip()
    m = do.Manager(token=TOKEN)
    k = do.SSHKey(token=TOKEN, name="mine", public_key=pub)
    k.create()
    keys = m.get_all_sshkeys()
    assert [(x.id, x.fingerprint) for x in keys] == [(k.id, key_fingerprint(pub))]
    found = do.SSHKey(token=TOKEN).load_by_pub_key(pub)
    assert found.id == k.id
    # same key, another comment: the library's exact-string match misses it, DO refuses a twin
    other = pub.rsplit(" ", 1)[0] + " someone@else"
    assert do.SSHKey(token=TOKEN).load_by_pub_key(other) is None
    with pytest.raises(do.DataReadError, match="already in use"):
        do.SSHKey(token=TOKEN, name="again", public_key=other).create()
    by_fp = do.SSHKey(token=TOKEN, fingerprint=key_fingerprint(pub))
    by_fp.id = None
    by_fp.load()
    assert by_fp.id == k.id
    assert k.destroy() is True
    assert m.get_all_sshkeys() == []


def test_tags(emu, do):
    made = create3(do, tags=[])
    tag = do.Tag(token=TOKEN, name="role")
    tag.create()
    do.Tag(token=TOKEN, name="role").create()           # idempotent, as at DigitalOcean
    assert tag.add_droplets([str(made[0].id), str(made[2].id)]) is True
    m = do.Manager(token=TOKEN)
    assert [d.name for d in m.get_all_droplets(tag_name="role")] == ["a-1", "a-3"]
    assert [t.name for t in m.get_all_tags()] == ["role"]
    assert tag.remove_droplets([str(made[0].id)]) is True
    assert [d.name for d in m.get_all_droplets(tag_name="role")] == ["a-3"]
    assert tag.delete() is True


def test_firewalls(emu, do):
    rule = {"protocol": "tcp", "ports": "22",
            "sources": {"addresses": ["0.0.0.0/0"], "droplet_ids": [], "load_balancer_uids": [],
                        "tags": []}}
    out = {"protocol": "icmp", "ports": "", "destinations": {"addresses": ["0.0.0.0/0"]}}
    with pytest.raises(do.DataReadError, match="tag 't' does not exist"):
        do.Firewall(token=TOKEN, name="fw-1", tags=["t"], droplet_ids=[],
                    inbound_rules=[rule], outbound_rules=[out]).create()
    do.Tag(token=TOKEN, name="t").create()
    fw = do.Firewall(token=TOKEN, name="fw-1", tags=["t"], droplet_ids=[],
                     inbound_rules=[rule], outbound_rules=[out]).create()
    assert fw.id and fw.status == "waiting"
    listed = do.Manager(token=TOKEN).get_all_firewalls()
    assert [(f.name, f.tags, f.status) for f in listed] == [("fw-1", ["t"], "succeeded")]
    assert listed[0].inbound_rules[0].ports == "22"
    assert listed[0].outbound_rules[0].ports == "0"       # ICMP: the API answers "0"
    with pytest.raises(do.DataReadError, match="tag does not exist"):
        fw.add_tags(["x"])
    do.Tag(token=TOKEN, name="x").create()
    assert fw.add_tags(["x"]) is True
    assert do.Manager(token=TOKEN).get_firewall(fw.id).tags == ["t", "x"]
    bad = dict(rule, ports="all")
    with pytest.raises(do.DataReadError, match="invalid ports"):
        do.Firewall(token=TOKEN, name="fw-2", tags=["t"], inbound_rules=[bad]).create()
    assert fw.destroy() is True
    assert do.Manager(token=TOKEN).get_all_firewalls() == []


def test_vpcs(emu, do):
    v = do.VPC(token=TOKEN, name="net-1", region="fra1", ip_range="10.20.0.0/20",
               description="d").create()
    assert v.id and v.urn == f"do:vpc:{v.id}" and v.default is False
    assert do.Manager(token=TOKEN).get_vpc(v.id).ip_range == "10.20.0.0/20"
    vpcs = do.Manager(token=TOKEN).get_all_vpcs()
    assert "net-1" in [x.name for x in vpcs] and any(x.default for x in vpcs)
    with pytest.raises(do.DataReadError, match="already exists"):
        do.VPC(token=TOKEN, name="net-1", region="fra1", description="d",
               ip_range="10.30.0.0/20").create()
    with pytest.raises(do.DataReadError, match="description: expected a string, got null"):
        do.VPC(token=TOKEN, name="net-2", region="fra1", ip_range="10.30.0.0/20").create()
    d = do.Droplet.create_multiple(token=TOKEN, names=["in-vpc"], size="s-1vcpu-1gb",
                                   image="ubuntu-24-04-x64", region="fra1", vpc_uuid=v.id)[0]
    with pytest.raises(do.DataReadError, match="members"):
        v.destroy()
    d.destroy()
    assert v.destroy() is True
    default = next(x for x in vpcs if x.default)
    with pytest.raises(do.DataReadError, match="default"):
        default.destroy()


def test_regions_sizes_images_account(emu, do):
    m = do.Manager(token=TOKEN)
    assert "fra1" in [r.slug for r in m.get_all_regions()]
    assert "s-1vcpu-1gb" in [s.slug for s in m.get_all_sizes()]
    assert "ubuntu-24-04-x64" in [i.slug for i in m.get_all_images()]
    assert m.get_account().status == "active"


def test_create_validation(emu, do):
    with pytest.raises(do.DataReadError, match="Region"):
        do.Droplet.create_multiple(token=TOKEN, names=["x"], size="s-1vcpu-1gb",
                                   image="ubuntu-24-04-x64", region="mars1",
                                   vpc_uuid=emu.default_vpc("fra1"))
    with pytest.raises(do.DataReadError, match=r"names\[0\]: 'bad_name' does not match"):
        do.Droplet.create_multiple(token=TOKEN, names=["bad_name"], size="s-1vcpu-1gb",
                                   image="ubuntu-24-04-x64", region="fra1")
    with pytest.raises(do.DataReadError, match="vpc_uuid: expected a string, got null"):
        do.Droplet.create_multiple(token=TOKEN, names=["x"], size="s-1vcpu-1gb",
                                   image="ubuntu-24-04-x64", region="fra1")
    with pytest.raises(do.DataReadError, match="SSH key"):
        do.Droplet.create_multiple(token=TOKEN, names=["x"], size="s-1vcpu-1gb",
                                   image="ubuntu-24-04-x64", region="fra1", ssh_keys=[999],
                                   vpc_uuid=emu.default_vpc("fra1"))


def test_counts_by_method_and_template(emu, do):
    made = create3(do)
    made[0].destroy()
    do.Manager(token=TOKEN).get_all_droplets(tag_name="t")
    assert emu.counts[("POST", "/v2/droplets")] == 1
    assert emu.counts[("DELETE", "/v2/droplets/{id}")] == 1
    assert emu.counts[("GET", "/v2/droplets")] == 1
    assert emu.total_requests() == 3
    emu.reset_counts()
    assert emu.total_requests() == 0


def test_custom_host_factory_and_destroyer(monkeypatch, do):
    made, gone = [], []
    release = threading.Event()

    def factory(name, index):
        release.wait(5)
        made.append((name, index))
        return f"127.0.1.{index + 10}", f"127.0.2.{index + 10}"

    with DOEmulator(TOKEN, fast=True, host_factory=factory, host_destroyer=gone.append) as e:
        monkeypatch.setenv("DIGITALOCEAN_END_POINT", e.url)
        ds = create3(do, names=["f-1", "f-2"], emu=e)
        assert {d["status"] for d in e.droplets("t")} == {"new"}   # factory still running
        release.set()
        e.model._pool.shutdown(wait=True)
        listed = do.Manager(token=TOKEN).get_all_droplets(tag_name="t")
        assert sorted((d.name, d.ip_address, d.private_ip_address) for d in listed) == [
            ("f-1", "127.0.1.10", "127.0.2.10"), ("f-2", "127.0.1.11", "127.0.2.11")]
        ds[0].destroy()
        assert gone == ["f-1"]


def test_failing_host_factory_leaves_droplet_new_and_action_errored(monkeypatch, do):
    def factory(name, index):
        raise RuntimeError("no lab")

    with DOEmulator(TOKEN, fast=True, host_factory=factory, factory_in_background=False) as e:
        monkeypatch.setenv("DIGITALOCEAN_END_POINT", e.url)
        d = create3(do, names=["z-1"], emu=e)[0]
        assert e.droplets()[0]["status"] == "new"
        assert d.get_actions()[0].status == "errored"
        assert e.errors == ["z-1: host factory failed: no lab"]


def test_library_without_env_goes_elsewhere():
    # documents why the adapter sets DIGITALOCEAN_END_POINT: end_point= is not propagated
    import digitalocean
    os.environ.pop("DIGITALOCEAN_END_POINT", None)
    m = digitalocean.Manager(token=TOKEN, end_point="http://127.0.0.1:9/v2/")
    assert digitalocean.Droplet(token=TOKEN).end_point == "https://api.digitalocean.com/v2/"
    assert m.end_point == "http://127.0.0.1:9/v2/"
