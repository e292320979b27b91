"""The emulator is as strict as the published API: per operation, what it accepts, the status
code it answers a bad request with, and that answer's error shape."""
from __future__ import annotations

import pytest
import requests

from tests.do_emulator import DOEmulator
from tests.do_emulator.schemas import OPERATIONS, nulls, problems
from tests.fakes.clock import FakeClock
from tests.do_emulator.testing import write_public_key

TOKEN = "dop_v1_schema_token_abad1dea"
H = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
ERROR = {"id", "message", "request_id"}
ROOT_CAUSES = {"error", "messages", "root_causes"}


@pytest.fixture
def world(tmp_path_factory):
    """An emulator of its own per test (a row that creates something must not change what
    another row finds, whatever the order or the worker), with a tag, a droplet, a key, a
    firewall and a VPC (10.30.0.0/24) to address."""
    ft = FakeClock()
    with DOEmulator(TOKEN, clock=ft.clock, wall_clock=ft.clock) as emu:
        def call(method, path, body=None):
            return requests.request(method, emu.url + path, json=body, headers=H, timeout=5)
        pub = open(write_public_key(tmp_path_factory.mktemp("k"))).read().strip()
        assert call("POST", "tags", {"name": "t"}).status_code == 201
        droplet = call("POST", "droplets", {"name": "d-1", "region": "fra1", "size": "s-1vcpu-1gb",
                                            "image": "ubuntu-24-04-x64"}).json()["droplet"]
        call("POST", "account/keys", {"name": "k", "public_key": pub})
        fw = call("POST", "firewalls", {"name": "fw", "inbound_rules": [
            {"protocol": "tcp", "ports": "22", "sources": {"addresses": ["0.0.0.0/0"]}}]})
        vpc = call("POST", "vpcs", {"name": "v", "region": "fra1",
                                    "ip_range": "10.30.0.0/24"}).json()["vpc"]
        ids = {"droplet": droplet["id"], "fw": fw.json()["firewall"]["id"], "vpc": vpc["id"]}
        yield emu, call, ids, pub


DROPLET = {"name": "ok-1", "region": "fra1", "size": "s-1vcpu-1gb", "image": "ubuntu-24-04-x64"}
RULE_IN = {"protocol": "tcp", "ports": "80", "sources": {"addresses": ["0.0.0.0/0"]}}
RULE_OUT = {"protocol": "icmp", "destinations": {"addresses": ["0.0.0.0/0"]}}

# (id, method, path, body, status, error shape or None, text in the error message)
TABLE = [
    # POST /v2/droplets: 202, else 422 {id, message}
    ("droplet-ok", "POST", "droplets", DROPLET, 202, None, ""),
    ("droplet-multi", "POST", "droplets", {**DROPLET, "name": None, "names": ["m-1", "m-2"]},
     202, None, ""),
    ("droplet-private-image", "POST", "droplets", {**DROPLET, "name": "p-1", "image": 190000001},
     202, None, ""),
    ("droplet-vpc-null", "POST", "droplets", {**DROPLET, "vpc_uuid": None}, 422, ERROR,
     "vpc_uuid: expected a string, got null"),
    ("droplet-user-data-null", "POST", "droplets", {**DROPLET, "user_data": None}, 422, ERROR,
     "user_data: expected a string, got null"),
    ("droplet-user-data-big", "POST", "droplets", {**DROPLET, "user_data": "x" * 65537}, 422,
     ERROR, "user_data: larger than 65536 bytes"),
    ("droplet-no-size", "POST", "droplets", {k: v for k, v in DROPLET.items() if k != "size"},
     422, ERROR, "size: required"),
    ("droplet-name-and-names", "POST", "droplets", {**DROPLET, "names": ["a"]}, 422, ERROR,
     "exactly one of name, names"),
    ("droplet-eleven", "POST", "droplets", {**DROPLET, "name": None,
                                            "names": [f"n-{i}" for i in range(11)]},
     422, ERROR, "names: more than 10 items"),
    ("droplet-bad-name", "POST", "droplets", {**DROPLET, "name": "under_score"}, 422, ERROR,
     "does not match"),
    ("droplet-bad-tag", "POST", "droplets", {**DROPLET, "tags": ["a b"]}, 422, ERROR,
     "tags[0]"),
    ("droplet-image-bool", "POST", "droplets", {**DROPLET, "image": True}, 422, ERROR,
     "image: expected a string or an integer"),
    ("droplet-unknown-image", "POST", "droplets", {**DROPLET, "image": 5}, 422, ERROR,
     "Image is invalid"),
    ("droplet-not-json", "POST", "droplets", "{", 400, ERROR, "error parsing request body"),
    # POST /v2/account/keys: 201, else 422
    ("key-no-name", "POST", "account/keys", {"public_key": "ssh-ed25519 AAAA"}, 422, ERROR,
     "name: required"),
    ("key-garbage", "POST", "account/keys", {"name": "x", "public_key": "nope"}, 422, ERROR,
     "Key invalid"),
    # POST /v2/tags: 201, else 400 {error, messages, root_causes}
    ("tag-ok", "POST", "tags", {"name": "env:prod_1"}, 201, None, ""),
    ("tag-existing", "POST", "tags", {"name": "t"}, 201, None, ""),
    ("tag-space", "POST", "tags", {"name": "a b"}, 400, ROOT_CAUSES, "does not match"),
    ("tag-long", "POST", "tags", {"name": "t" * 256}, 400, ROOT_CAUSES, "longer than 255"),
    # POST /v2/tags/{tag}/resources: 204, 404 unknown tag, 400 bad body
    ("tag-resources-ok", "POST", "tags/t/resources",
     {"resources": [{"resource_id": "{droplet}", "resource_type": "droplet"}]}, 204, None, ""),
    ("tag-resources-int-id", "POST", "tags/t/resources",
     {"resources": [{"resource_id": 5, "resource_type": "droplet"}]}, 400, ERROR,
     "resources[0].resource_id: expected a string"),
    ("tag-resources-no-tag", "POST", "tags/nope/resources",
     {"resources": [{"resource_id": "{droplet}", "resource_type": "droplet"}]}, 404, ERROR,
     "could not be found"),
    # POST /v2/firewalls: 202, else 400 (schema) or 422 (what the schema cannot say)
    ("fw-ok", "POST", "firewalls", {"name": "fw-2", "tags": ["t"], "inbound_rules": [RULE_IN],
                                    "outbound_rules": [RULE_OUT]}, 202, None, ""),
    ("fw-no-rules", "POST", "firewalls", {"name": "fw-3"}, 400, ERROR,
     "at least one of inbound_rules, outbound_rules"),
    ("fw-bad-name", "POST", "firewalls", {"name": "_fw", "inbound_rules": [RULE_IN]}, 400,
     ERROR, "name: '_fw' does not match"),
    ("fw-protocol", "POST", "firewalls", {"name": "fw-4", "inbound_rules": [
        {**RULE_IN, "protocol": "sctp"}]}, 400, ERROR, "protocol: expected one of tcp, udp, icmp"),
    ("fw-no-sources", "POST", "firewalls", {"name": "fw-5", "inbound_rules": [
        {"protocol": "tcp", "ports": "80"}]}, 400, ERROR, "inbound_rules[0].sources: required"),
    ("fw-ports-all", "POST", "firewalls", {"name": "fw-6", "inbound_rules": [
        {**RULE_IN, "ports": "all"}]}, 422, ERROR, "invalid ports 'all'"),
    ("fw-ports-missing", "POST", "firewalls", {"name": "fw-7", "inbound_rules": [
        {"protocol": "udp", "sources": {"addresses": ["0.0.0.0/0"]}}]}, 422, ERROR,
     "invalid ports None"),
    ("fw-tag-missing", "POST", "firewalls", {"name": "fw-8", "tags": ["ghost"],
                                             "inbound_rules": [RULE_IN]}, 422, ERROR,
     "tag 'ghost' does not exist"),
    ("fw-source-tag-missing", "POST", "firewalls", {"name": "fw-9", "inbound_rules": [
        {**RULE_IN, "sources": {"tags": ["ghost"]}}]}, 422, ERROR, "tag 'ghost' does not exist"),
    ("fw-droplets-null", "POST", "firewalls", {"name": "fw-10", "droplet_ids": None,
                                               "inbound_rules": [RULE_IN]}, 202, None, ""),
    # PUT /v2/firewalls/{fw}: 200, 404, 400
    ("fw-put-ok", "PUT", "firewalls/{fw}", {"name": "fw", "inbound_rules": [RULE_IN]}, 200,
     None, ""),
    ("fw-put-no-name", "PUT", "firewalls/{fw}", {"inbound_rules": [RULE_IN]}, 400, ERROR,
     "name: required"),
    ("fw-put-unknown", "PUT", "firewalls/00000000-0000-0000-0000-000000000000",
     {"name": "fw", "inbound_rules": [RULE_IN]}, 404, ERROR, "could not be found"),
    # POST /v2/firewalls/{fw}/tags: 204, 422 for a tag that does not exist
    ("fw-tags-ok", "POST", "firewalls/{fw}/tags", {"tags": ["t"]}, 204, None, ""),
    ("fw-tags-missing", "POST", "firewalls/{fw}/tags", {"tags": ["ghost"]}, 422, ERROR,
     "tag does not exist"),
    # POST /v2/vpcs: 201, else 422
    ("vpc-ok", "POST", "vpcs", {"name": "v-2", "region": "fra1", "ip_range": "10.40.0.0/24"},
     201, None, ""),
    ("vpc-range-null", "POST", "vpcs", {"name": "v-3", "region": "fra1", "ip_range": None}, 422,
     ERROR, "ip_range: expected a string, got null"),
    ("vpc-range-8", "POST", "vpcs", {"name": "v-4", "region": "fra1", "ip_range": "10.0.0.0/8"},
     422, ERROR, "no larger than /16"),
    ("vpc-range-30", "POST", "vpcs", {"name": "v-5", "region": "fra1",
                                      "ip_range": "10.1.2.0/30"}, 422, ERROR, "no smaller than /28"),
    ("vpc-range-public", "POST", "vpcs", {"name": "v-6", "region": "fra1",
                                          "ip_range": "198.18.0.0/16"}, 422, ERROR, "RFC 1918"),
    ("vpc-range-overlap", "POST", "vpcs", {"name": "v-7", "region": "fra1",   # the world's VPC
                                           "ip_range": "10.30.0.0/20"}, 422, ERROR, "overlaps"),
    ("vpc-no-region", "POST", "vpcs", {"name": "v-8"}, 422, ERROR, "region: required"),
    ("vpc-patch-name", "PATCH", "vpcs/{vpc}", {"name": "bad name"}, 422, ERROR, "does not match"),
    # reads and deletes
    ("droplet-get-missing", "GET", "droplets/1", None, 404, ERROR, "could not be found"),
    ("droplet-delete-missing", "DELETE", "droplets/1", None, 404, ERROR, "could not be found"),
    ("method-not-allowed", "PATCH", "droplets", {}, 405, ERROR, "not allowed"),
]


@pytest.mark.parametrize("method, path, body, status, shape, text",
                         [t[1:] for t in TABLE], ids=[t[0] for t in TABLE])
def test_operation_table(world, method, path, body, status, shape, text):
    emu, call, ids, _ = world
    path = path.format(**ids)
    if isinstance(body, dict):
        body = {k: (v.format(**ids) if isinstance(v, str) else v) for k, v in body.items()
                if v is not None or k != "name" or "names" not in body}
        if "resources" in body:
            body["resources"] = [{**r, "resource_id": str(r["resource_id"]).format(**ids)
                                  if isinstance(r["resource_id"], str) else r["resource_id"]}
                                 for r in body["resources"]]
    if isinstance(body, str):
        r = requests.request(method, emu.url + path, data=body, headers=H, timeout=5)
    else:
        r = call(method, path, body)
    assert r.status_code == status, r.text
    if shape is None:
        return
    payload = r.json()
    assert set(payload) == shape
    message = payload.get("message") or payload.get("error")
    assert text in message, message
    if shape == ROOT_CAUSES:
        assert payload["messages"] is None and text in payload["root_causes"][0]


def test_the_table_covers_every_operation_swarmsmith_sends_a_body_to():
    from tests.do_emulator import match_route
    tested = {(m, match_route(m, "/v2/" + p)[0]) for _, m, p, *_ in TABLE}
    used = {("POST", "/v2/droplets"), ("POST", "/v2/account/keys"), ("POST", "/v2/tags"),
            ("POST", "/v2/tags/{tag}/resources"), ("POST", "/v2/firewalls"),
            ("PUT", "/v2/firewalls/{fw}"), ("POST", "/v2/vpcs")}
    assert used <= tested and used <= set(OPERATIONS)


def test_icmp_ports_come_back_as_zero(world):
    emu, call, ids, _ = world
    r = call("POST", "firewalls", {"name": "icmp-1", "outbound_rules": [
        {**RULE_OUT, "ports": ""}, {"protocol": "icmp", "ports": "0",
                                    "destinations": {"addresses": ["::/0"]}}]})
    assert [x["ports"] for x in r.json()["firewall"]["outbound_rules"]] == ["0", "0"]


def test_schema_helpers_find_nulls_and_problems():
    assert nulls({"a": None, "b": [1, None], "c": {"d": None}}) == ["a", "b[1]", "c.d"]
    assert problems("POST", "/v2/vpcs", {"name": "v", "region": "fra1", "ip_range": None}) == [
        "ip_range: expected a string, got null"]
    assert problems("GET", "/v2/droplets", None) == []


def test_list_lag_hides_new_droplets_from_lists_only():
    ft = FakeClock()
    with DOEmulator(TOKEN, clock=ft.clock, list_lag=4) as emu:
        r = requests.post(emu.url + "droplets", json=DROPLET, headers=H, timeout=5)
        did = r.json()["droplet"]["id"]
        listed = lambda: requests.get(emu.url + "droplets", headers=H, timeout=5).json()["droplets"]
        assert listed() == []
        assert requests.get(emu.url + f"droplets/{did}", headers=H, timeout=5).status_code == 200
        ft.sleep(4)
        assert [d["id"] for d in listed()] == [did]


def test_errored_action_keeps_droplet_new():
    ft = FakeClock()
    with DOEmulator(TOKEN, fast=True, clock=ft.clock) as emu:
        emu.fail_action("ok-1", after=2)
        r = requests.post(emu.url + "droplets", json=DROPLET, headers=H, timeout=5).json()
        action = r["links"]["actions"][0]["id"]
        status = lambda: requests.get(emu.url + f"actions/{action}", headers=H,
                                      timeout=5).json()["action"]["status"]
        assert status() == "in-progress"
        ft.sleep(10)
        assert status() == "errored"
        assert emu.droplets()[0]["status"] == "new"
        assert requests.get(emu.url + "actions", headers=H, timeout=5).json()["actions"][0][
            "id"] == action                                 # newest first


def test_hourly_budget_and_burst_limit_headers():
    ft = FakeClock(start=1_800_000_000.0)
    with DOEmulator(TOKEN, fast=True, clock=ft.clock, wall_clock=ft.clock, hourly_limit=3,
                    per_minute_limit=2) as emu:
        get = lambda: requests.get(emu.url + "droplets", headers=H, timeout=5)
        first = get()
        assert first.headers["Ratelimit-Remaining"] == "2"
        assert first.headers["Ratelimit-Reset"] == str(1_800_000_000 + 3600)
        ft.sleep(10)
        get()
        burst = get()                                        # 2 in the last minute
        assert burst.status_code == 429 and burst.headers["Retry-After"] == "50"
        assert burst.json() == {"id": "too_many_requests", "message": "API rate limit exceeded.",
                                "request_id": burst.json()["request_id"]}
        ft.sleep(60)
        assert get().status_code == 200                      # the third of the hour
        hourly = get()
        assert hourly.status_code == 429 and "Retry-After" not in hourly.headers
        assert hourly.headers["Ratelimit-Remaining"] == "0"
        assert hourly.headers["Ratelimit-Reset"] == str(1_800_000_000 + 3600)
        ft.sleep(3600 - 70)                                  # the first request expires
        assert get().status_code == 200


# --- the emulator's defaults are the API's ---------------------------------------------------
def _get(emu, path):
    return requests.get(emu.url + path, headers=H, timeout=5)


def _post(emu, path, body):
    return requests.post(emu.url + path, json=body, headers=H, timeout=5)


def test_defaults_lag_and_limit_as_the_api_and_fast_turns_that_off():
    from tests.do_emulator.server import (DROPLET_LIMIT, ENDPOINT_LIMITS, PER_MINUTE_LIMIT,
                                          REALISTIC_LIST_LAG)
    ft = FakeClock()
    with DOEmulator(TOKEN, clock=ft.clock, wall_clock=ft.clock) as emu:
        assert (emu.model.list_lag, emu.per_minute_limit, emu.endpoint_limits) == (
            REALISTIC_LIST_LAG, PER_MINUTE_LIMIT, ENDPOINT_LIMITS)
        assert _get(emu, "account").json()["account"]["droplet_limit"] == DROPLET_LIMIT
        _post(emu, "droplets", DROPLET)
        assert _get(emu, "droplets").json()["droplets"] == []      # not listed yet
        ft.sleep(REALISTIC_LIST_LAG)
        assert len(_get(emu, "droplets").json()["droplets"]) == 1
    with DOEmulator(TOKEN, fast=True, clock=ft.clock, wall_clock=ft.clock) as emu:
        assert (emu.model.list_lag, emu.per_minute_limit, emu.endpoint_limits) == (0, None, {})
        _post(emu, "droplets", DROPLET)
        assert len(_get(emu, "droplets").json()["droplets"]) == 1
        assert all(_get(emu, "account/keys").status_code == 200 for _ in range(12))


def test_ten_ssh_key_listings_a_minute():
    ft = FakeClock(start=1_800_000_000.0)
    with DOEmulator(TOKEN, clock=ft.clock, wall_clock=ft.clock) as emu:
        for _ in range(10):
            assert _get(emu, "account/keys").status_code == 200
            ft.sleep(1)
        refused = _get(emu, "account/keys")
        assert refused.status_code == 429 and refused.headers["Retry-After"] == "50"
        assert _get(emu, "droplets").status_code == 200            # other endpoints still fine
        ft.sleep(50)
        assert _get(emu, "account/keys").status_code == 200


def test_droplet_limit_enforced():
    many = {k: v for k, v in DROPLET.items() if k != "name"}
    with DOEmulator(TOKEN, fast=True, droplet_limit=3) as emu:
        assert _post(emu, "droplets", {**many, "names": ["a-1", "a-2"]}).status_code == 202
        over = _post(emu, "droplets", {**many, "names": ["a-3", "a-4"]})
        assert over.status_code == 422
        assert over.json()["message"] == ("creating this/these droplet(s) will exceed your "
                                          "droplet limit")
        assert len(emu.droplets()) == 2
        assert _post(emu, "droplets", {**DROPLET, "name": "a-3"}).status_code == 202


def test_tags_are_case_stable():
    with DOEmulator(TOKEN, fast=True) as emu:
        assert _post(emu, "tags", {"name": "PROD"}).json()["tag"]["name"] == "PROD"
        assert _post(emu, "tags", {"name": "prod"}).json()["tag"]["name"] == "PROD"
        d = _post(emu, "droplets", {**DROPLET, "tags": ["prod"]}).json()["droplet"]
        assert d["tags"] == ["PROD"]
        assert [t["name"] for t in _get(emu, "tags").json()["tags"]] == ["PROD"]
        assert _get(emu, "tags/prod").status_code == 404            # canonical name only
        assert _get(emu, "tags/PROD").json()["tag"]["resources"]["count"] == 1


def test_create_without_region_or_with_a_region_prefix():
    with DOEmulator(TOKEN, fast=True) as emu:
        anywhere = {k: v for k, v in DROPLET.items() if k != "region"}
        assert _post(emu, "droplets", anywhere).json()["droplet"]["region"]["slug"] == "nyc3"
        prefixed = _post(emu, "droplets", {**DROPLET, "name": "p-1", "region": "ams"})
        assert prefixed.status_code == 202
        assert prefixed.json()["droplet"]["region"]["slug"] == "ams3"
        vpc = emu.default_vpc("lon1")
        in_vpc = _post(emu, "droplets", {**anywhere, "name": "v-1", "vpc_uuid": vpc})
        assert in_vpc.json()["droplet"]["region"]["slug"] == "lon1"  # the VPC's region
        assert _post(emu, "droplets", {**DROPLET, "region": "xyz"}).status_code == 422


def test_errored_action_stays_errored_when_its_droplet_is_deleted():
    ft = FakeClock()
    with DOEmulator(TOKEN, fast=True, clock=ft.clock, wall_clock=ft.clock) as emu:
        emu.fail_action("ok-1")
        r = _post(emu, "droplets", DROPLET).json()
        link = r["links"]["actions"][0]
        assert link["href"] == f"{emu.url}actions/{link['id']}"     # a full URI
        assert requests.delete(emu.url + f"droplets/{r['droplet']['id']}", headers=H,
                               timeout=5).status_code == 204
        ft.sleep(5)
        assert requests.get(link["href"], headers=H, timeout=5).json()["action"]["status"] \
            == "errored"
        assert [(a["type"], a["status"]) for a in _get(emu, "actions").json()["actions"]] == [
            ("destroy", "completed"), ("create", "errored")]


# --- every answer carries what the API description requires ----------------------------------
def test_answer_tables_notice_a_missing_required_field():
    from tests.do_emulator.schemas import response_problems
    with DOEmulator(TOKEN, fast=True) as emu:
        made = _post(emu, "droplets", DROPLET).json()
        droplet = _get(emu, f"droplets/{made['droplet']['id']}").json()
        action = _get(emu, f"actions/{made['links']['actions'][0]['id']}").json()
        assert response_problems("GET", "/v2/droplets/{id}", 200, droplet) == []
        cut = {"droplet": {k: v for k, v in droplet["droplet"].items() if k != "size"}}
        assert response_problems("GET", "/v2/droplets/{id}", 200, cut) == [
            "GET /v2/droplets/{id}: droplet.size: required"]
        region = dict(droplet["droplet"]["region"], features=None)
        assert "droplet.region.features: expected an array, got null" in response_problems(
            "GET", "/v2/droplets/{id}", 200, {"droplet": {**droplet["droplet"],
                                                          "region": region}})[0]
        assert response_problems("GET", "/v2/actions/{action}", 200, action) == []
        no_region = {"action": {k: v for k, v in action["action"].items() if k != "region"}}
        assert response_problems("GET", "/v2/actions/{action}", 200, no_region) == [
            "GET /v2/actions/{action}: action.region: required"]
        relative = {**made, "links": {"actions": [{**made["links"]["actions"][0],
                                                   "href": "/v2/actions/1"}]}}
        assert "does not match" in response_problems("POST", "/v2/droplets", 202, relative)[0]
        net = {"ip_address": "10.0.0.2", "netmask": "255.255.0.0", "type": "private"}
        assert "gateway: required" in response_problems("GET", "/v2/droplets/{id}", 200, {
            "droplet": {**droplet["droplet"], "networks": {"v4": [net], "v6": []}}})[0]
        sizes = _get(emu, "sizes").json()
        assert response_problems("GET", "/v2/sizes", 200, sizes) == []
        sizes["sizes"][0].pop("price_hourly")
        assert response_problems("GET", "/v2/sizes", 200, sizes) == [
            "GET /v2/sizes: sizes[0].price_hourly: required"]
        assert response_problems("GET", "/v2/regions", 200, _get(emu, "regions").json()) == []


def test_every_answer_in_the_providers_scenarios_carries_the_required_fields(tmp_path):
    """up (with a lost create answer and droplets made twice), plan, an errored create, a
    re-run, status listing, down: the emulator with its defaults, every answer checked."""
    from provision.hosts.digitalocean import DigitalOceanProvider
    from provision.base.hosts import WantedHost
    from tests.do_emulator.schemas import response_problems
    from tests.do_emulator.testing import settings
    ft = FakeClock()
    pub = write_public_key(tmp_path)
    wanted = [WantedHost("sc-manager-1", "manager"), WantedHost("sc-worker-1", "worker"),
              WantedHost("sc-worker-2", "worker")]
    with DOEmulator(TOKEN, clock=ft.clock, wall_clock=ft.clock, activation_delay=30) as emu:
        saved = []

        def provider(state=None):
            return DigitalOceanProvider(
                "sc", settings(pub), state, clock=ft.clock, sleep=ft.sleep, wall_clock=ft.clock,
                ssh_check=None, on_state=saved.append,
                env={"DIGITALOCEAN_TOKEN": TOKEN, "DIGITALOCEAN_END_POINT": emu.url})
        emu.set_list_lag(90, actions=True)
        emu.fail_next_create(created=3)
        provider().plan(wanted)
        provider().ensure(wanted)                      # lost answer, created again, copies
        emu.set_list_lag(10)
        emu.fail_action("sc-worker-3")
        with pytest.raises(Exception, match="errored"):
            provider(saved[-1]).ensure(wanted + [WantedHost("sc-worker-3", "worker")])
        provider(saved[-1]).ensure(wanted)
        emu.set_list_lag(300)                          # a lost answer found by id
        emu.fail_next_create(created=1)
        provider(saved[-1]).ensure(wanted + [WantedHost("sc-worker-4", "worker")])
        provider(saved[-1]).existing()
        provider(saved[-1]).destroy()
        seen = {(meth, tmpl) for meth, tmpl, *_ in emu.responses}
        assert seen >= {("GET", "/v2/account"), ("GET", "/v2/actions"), ("GET", "/v2/droplets"),
                        ("POST", "/v2/droplets"), ("GET", "/v2/droplets/{id}"),
                        ("GET", "/v2/droplets/{id}/actions"), ("GET", "/v2/account/keys"),
                        ("POST", "/v2/firewalls"), ("POST", "/v2/vpcs"), ("GET", "/v2/tags"),
                        ("DELETE", "/v2/droplets/{id}")}
        assert any(status == 500 for *_, status, _ in emu.responses)   # the lost answer
        bad = [(meth, tmpl, p) for meth, tmpl, status, body in emu.responses
               for p in response_problems(meth, tmpl, status, body)]
        assert bad == []
