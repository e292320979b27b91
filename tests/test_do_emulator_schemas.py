"""The emulator is as strict as the published API: per operation, what it accepts, the status
code it answers a bad request with, and that answer's error shape."""
from __future__ import annotations

import pytest
import requests

from tests.do_emulator import DOEmulator
from tests.do_emulator.schemas import OPERATIONS, nulls, problems
from tests.do_emulator.testing import FakeTime, write_public_key

TOKEN = "dop_v1_schema_token_abad1dea"
H = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
ERROR = {"id", "message", "request_id"}
ROOT_CAUSES = {"error", "messages", "root_causes"}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """One emulator with a tag, a droplet, a key, a firewall and a VPC to address."""
    ft = FakeTime()
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
        vpc = call("POST", "vpcs", {"name": "v", "region": "fra1"}).json()["vpc"]
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
    ("vpc-range-overlap", "POST", "vpcs", {"name": "v-7", "region": "fra1",
                                           "ip_range": "10.40.0.0/20"}, 422, ERROR, "overlaps"),
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
    ft = FakeTime()
    with DOEmulator(TOKEN, clock=ft.clock, list_lag=4) as emu:
        r = requests.post(emu.url + "droplets", json=DROPLET, headers=H, timeout=5)
        did = r.json()["droplet"]["id"]
        listed = lambda: requests.get(emu.url + "droplets", headers=H, timeout=5).json()["droplets"]
        assert listed() == []
        assert requests.get(emu.url + f"droplets/{did}", headers=H, timeout=5).status_code == 200
        ft.sleep(4)
        assert [d["id"] for d in listed()] == [did]


def test_errored_action_keeps_droplet_new():
    ft = FakeTime()
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
    ft = FakeTime(start=1_800_000_000.0)
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
