"""Request bodies the emulator accepts, one table per operation, and the answer to a body that
breaks its table (status code and error shape differ between operations, as DigitalOcean
publishes them). Then what each answer must carry (RESPONSES: the fields the API description
marks required, with their types), which `response_problems` checks against recorded answers.

The rules are our own encoding of the published API description: field types (a field typed as
a string is not nullable unless marked so), required fields, patterns and size limits. Unknown
fields are ignored, as the API does. `problems(method, template, body)` is also used by tests to
check every request a run recorded.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class F:
    """One field: accepted Python types (bool is never an int here), and its limits."""
    types: tuple
    required: bool = False
    nullable: bool = False
    pattern: str | None = None
    max_len: int | None = None
    max_bytes: int | None = None       # UTF-8 size, for user data
    items: "F | None" = None
    max_items: int | None = None
    fields: dict | None = None         # an object's own table
    enum: tuple | None = None


@dataclass(frozen=True)
class Operation:
    fields: dict
    status: int                        # answer to a body that breaks the table
    shape: str = "error"               # "error": {id, message, request_id}; "root_causes":
                                       # {error, messages, root_causes}
    one_of: tuple = ()                 # exactly one of these keys
    any_of: tuple = ()                 # at least one of these keys
    body_required: bool = True


STR, INT, BOOL, LIST, DICT = (str,), (int,), (bool,), (list,), (dict,)
DROPLET_NAME = r"^[a-zA-Z0-9]?[a-z0-9A-Z.\-]*[a-z0-9A-Z]$"
TAG_NAME = r"^[a-zA-Z0-9_\-:]+$"
FIREWALL_NAME = r"^[a-zA-Z0-9][a-zA-Z0-9.-]+$"
VPC_NAME = r"^[a-zA-Z0-9\-.]+$"
PORTS = r"^(0|[1-9][0-9]{0,4}(-[1-9][0-9]{0,4})?)$"
USER_DATA_MAX = 64 * 1024

TAGS = F(LIST, nullable=True, items=F(STR, pattern=TAG_NAME, max_len=255))
TARGET = {"addresses": F(LIST, items=F(STR)), "droplet_ids": F(LIST, items=F(INT)),
          "load_balancer_uids": F(LIST, items=F(STR)), "kubernetes_ids": F(LIST, items=F(STR)),
          "tags": TAGS}


def _rule(target: str) -> F:
    # ICMP rules may leave `ports` out; the model checks that tcp/udp rules carry it
    return F(DICT, fields={"protocol": F(STR, required=True, enum=("tcp", "udp", "icmp")),
                           "ports": F(STR), target: F(DICT, required=True, fields=TARGET)})


FIREWALL = {"name": F(STR, required=True, pattern=FIREWALL_NAME, max_len=255),
            "droplet_ids": F(LIST, nullable=True, items=F(INT)), "tags": TAGS,
            "inbound_rules": F(LIST, nullable=True, items=_rule("sources")),
            "outbound_rules": F(LIST, nullable=True, items=_rule("destinations"))}

DROPLET_CREATE = {
    "name": F(STR, pattern=DROPLET_NAME, max_len=255),
    "names": F(LIST, items=F(STR, pattern=DROPLET_NAME, max_len=255), max_items=10),
    "region": F(STR), "size": F(STR, required=True), "image": F((str, int), required=True),
    "ssh_keys": F(LIST, items=F((str, int))), "backups": F(BOOL), "backup_policy": F(DICT),
    "ipv6": F(BOOL), "monitoring": F(BOOL), "tags": TAGS,
    "user_data": F(STR, max_bytes=USER_DATA_MAX), "private_networking": F(BOOL),
    "volumes": F(LIST, items=F(STR)), "vpc_uuid": F(STR), "with_droplet_agent": F(BOOL),
    "public_networking": F(BOOL)}

OPERATIONS: dict[tuple[str, str], Operation] = {
    ("POST", "/v2/droplets"): Operation(DROPLET_CREATE, 422, one_of=("name", "names")),
    ("POST", "/v2/account/keys"): Operation(
        {"name": F(STR, required=True, max_len=255), "public_key": F(STR, required=True)}, 422),
    ("POST", "/v2/tags"): Operation(
        {"name": F(STR, required=True, pattern=TAG_NAME, max_len=255)}, 400, "root_causes"),
    ("POST", "/v2/tags/{tag}/resources"): Operation(
        {"resources": F(LIST, required=True, items=F(DICT, fields={
            "resource_id": F(STR, required=True),
            "resource_type": F(STR, required=True, enum=("droplet", "image", "volume",
                                                         "volume_snapshot", "database"))}))},
        400),
    ("DELETE", "/v2/tags/{tag}/resources"): Operation(
        {"resources": F(LIST, required=True, items=F(DICT, fields={
            "resource_id": F(STR, required=True), "resource_type": F(STR, required=True)}))},
        400),
    ("POST", "/v2/firewalls"): Operation(FIREWALL, 400, any_of=("inbound_rules",
                                                                "outbound_rules")),
    ("PUT", "/v2/firewalls/{fw}"): Operation(FIREWALL, 400, any_of=("inbound_rules",
                                                                    "outbound_rules")),
    ("POST", "/v2/firewalls/{fw}/droplets"): Operation(
        {"droplet_ids": F(LIST, required=True, items=F(INT))}, 400),
    ("DELETE", "/v2/firewalls/{fw}/droplets"): Operation(
        {"droplet_ids": F(LIST, required=True, items=F(INT))}, 400),
    ("POST", "/v2/firewalls/{fw}/tags"): Operation({"tags": F(LIST, required=True,
                                                              items=TAGS.items)}, 400),
    ("DELETE", "/v2/firewalls/{fw}/tags"): Operation({"tags": F(LIST, required=True,
                                                                items=TAGS.items)}, 400),
    ("POST", "/v2/vpcs"): Operation(
        {"name": F(STR, required=True, pattern=VPC_NAME, max_len=255),
         "region": F(STR, required=True), "description": F(STR, max_len=255),
         "ip_range": F(STR)}, 422),
    ("PATCH", "/v2/vpcs/{vpc}"): Operation(
        {"name": F(STR, pattern=VPC_NAME, max_len=255), "description": F(STR, max_len=255),
         "default": F(BOOL)}, 422),
}


# --- answers -------------------------------------------------------------------------------
NUM = (int, float)
REGION = {"name": F(STR, True), "slug": F(STR, True), "features": F(LIST, True, items=F(STR)),
          "available": F(BOOL, True), "sizes": F(LIST, True, items=F(STR))}
SIZE = {"slug": F(STR, True), "memory": F(INT, True), "vcpus": F(INT, True),
        "disk": F(INT, True), "transfer": F(NUM, True), "price_monthly": F(NUM, True),
        "price_hourly": F(NUM, True), "regions": F(LIST, True, items=F(STR)),
        "available": F(BOOL, True), "description": F(STR, True)}
IMAGE = {"id": F(INT), "name": F(STR), "distribution": F(STR), "slug": F(STR, nullable=True),
         "public": F(BOOL), "regions": F(LIST, items=F(STR)),
         "type": F(STR, enum=("base", "snapshot", "backup", "custom", "admin"))}
# The description marks no field of a network required; the library reads all four, and a
# private network's gateway comes as null (so: present, null allowed).
NETWORK_V4 = {"ip_address": F(STR, True), "netmask": F(STR, True),
              "gateway": F(STR, True, nullable=True),
              "type": F(STR, True, enum=("public", "private"))}
DROPLET = {
    "id": F(INT, True), "name": F(STR, True), "memory": F(INT, True), "vcpus": F(INT, True),
    "disk": F(INT, True), "locked": F(BOOL, True),
    "status": F(STR, True, enum=("new", "active", "off", "archive")),
    "kernel": F(DICT, nullable=True), "created_at": F(STR, True),
    "features": F(LIST, True, items=F(STR)), "backup_ids": F(LIST, True, items=F(INT)),
    "next_backup_window": F(DICT, True, nullable=True),
    "snapshot_ids": F(LIST, True, items=F(INT)), "image": F(DICT, True, fields=IMAGE),
    "volume_ids": F(LIST, True, items=F(STR)), "size": F(DICT, True, fields=SIZE),
    "size_slug": F(STR, True),
    "networks": F(DICT, True, fields={"v4": F(LIST, True, items=F(DICT, fields=NETWORK_V4)),
                                      "v6": F(LIST, True, items=F(DICT))}),
    "region": F(DICT, True, fields=REGION), "tags": F(LIST, True, items=F(STR)),
    "vpc_uuid": F(STR)}
ACTION = {"id": F(INT, True), "status": F(STR, True, enum=("in-progress", "completed",
                                                            "errored")),
          "type": F(STR, True), "started_at": F(STR, True),
          "completed_at": F(STR, True, nullable=True), "resource_id": F(INT, True, nullable=True),
          "resource_type": F(STR, True), "region": F(DICT, True, fields=REGION),
          "region_slug": F(STR, True, nullable=True)}
ACTION_LINK = {"id": F(INT, True), "rel": F(STR, True),
               "href": F(STR, True, pattern=r"^https?://[^/]+/v2/actions/\d+$")}
ACCOUNT = {"droplet_limit": F(INT, True), "floating_ip_limit": F(INT, True),
           "email": F(STR, True), "uuid": F(STR, True), "email_verified": F(BOOL, True),
           "status": F(STR, True, enum=("active", "warning", "locked")),
           "status_message": F(STR, True)}
SSH_KEY = {"id": F(INT, True), "fingerprint": F(STR, True), "public_key": F(STR, True),
           "name": F(STR, True)}
TAG = {"name": F(STR, True), "resources": F(DICT, True)}
FIREWALL_OUT = {"id": F(STR, True), "name": F(STR, True), "status": F(STR, True),
                "created_at": F(STR, True), "pending_changes": F(LIST, True),
                "droplet_ids": F(LIST, True, items=F(INT)), "tags": F(LIST, True, items=F(STR)),
                "inbound_rules": F(LIST, True), "outbound_rules": F(LIST, True)}
VPC = {"id": F(STR, True), "urn": F(STR, True), "name": F(STR, True),
       "description": F(STR, True), "region": F(STR, True), "ip_range": F(STR, True),
       "default": F(BOOL, True), "created_at": F(STR, True)}
ERROR = {"id": F(STR, True), "message": F(STR, True), "request_id": F(STR)}


def _one(key: str, model: dict) -> dict:
    return {key: F(DICT, True, fields=model)}


def _listing(key: str, model: dict) -> dict:
    return {key: F(LIST, True, items=F(DICT, fields=model)), "links": F(DICT, True),
            "meta": F(DICT, True, fields={"total": F(INT, True)})}


CREATED_LINKS = {"links": F(DICT, True, fields={
    "actions": F(LIST, True, items=F(DICT, fields=ACTION_LINK))})}

# (method, template) -> the fields of a successful answer (a list: any one of them fits)
RESPONSES: dict[tuple[str, str], list[dict]] = {
    ("GET", "/v2/account"): [_one("account", ACCOUNT)],
    ("GET", "/v2/account/keys"): [_listing("ssh_keys", SSH_KEY)],
    ("POST", "/v2/account/keys"): [_one("ssh_key", SSH_KEY)],
    ("GET", "/v2/account/keys/{key}"): [_one("ssh_key", SSH_KEY)],
    ("GET", "/v2/droplets"): [_listing("droplets", DROPLET)],
    ("POST", "/v2/droplets"): [{**_one("droplet", DROPLET), **CREATED_LINKS},
                               {"droplets": F(LIST, True, items=F(DICT, fields=DROPLET)),
                                **CREATED_LINKS}],
    ("GET", "/v2/droplets/{id}"): [_one("droplet", DROPLET)],
    ("GET", "/v2/droplets/{id}/actions"): [_listing("actions", ACTION)],
    ("GET", "/v2/droplets/{id}/actions/{action}"): [_one("action", ACTION)],
    ("GET", "/v2/actions"): [_listing("actions", ACTION)],
    ("GET", "/v2/actions/{action}"): [_one("action", ACTION)],
    ("GET", "/v2/tags"): [_listing("tags", TAG)],
    ("POST", "/v2/tags"): [_one("tag", TAG)],
    ("GET", "/v2/tags/{tag}"): [_one("tag", TAG)],
    ("GET", "/v2/firewalls"): [_listing("firewalls", FIREWALL_OUT)],
    ("POST", "/v2/firewalls"): [_one("firewall", FIREWALL_OUT)],
    ("GET", "/v2/firewalls/{fw}"): [_one("firewall", FIREWALL_OUT)],
    ("PUT", "/v2/firewalls/{fw}"): [_one("firewall", FIREWALL_OUT)],
    ("GET", "/v2/vpcs"): [_listing("vpcs", VPC)],
    ("POST", "/v2/vpcs"): [_one("vpc", VPC)],
    ("GET", "/v2/vpcs/{vpc}"): [_one("vpc", VPC)],
    ("GET", "/v2/regions"): [_listing("regions", REGION)],
    ("GET", "/v2/sizes"): [_listing("sizes", SIZE)],
}


def response_problems(method: str, template: str, status: int, body) -> list[str]:
    """What a recorded answer lacks (empty list: nothing). 204 has no body; errors carry
    {id, message} (or the tags API's {error, messages, root_causes})."""
    if status == 204:
        return [] if body is None else ["204 with a body"]
    if status >= 400:
        if isinstance(body, dict) and {"error", "messages", "root_causes"} <= set(body):
            return []
        if not isinstance(body, dict):
            return [f"{status}: the error body is not JSON"]
        found = _check_fields(body, ERROR)
        return [f"{status}: {found}"] if found else []
    shapes = RESPONSES.get((method, template))
    if shapes is None:
        return [f"{method} {template}: no answer table"]
    if not isinstance(body, dict):
        return [f"{method} {template}: the body is not a JSON object"]
    found = [_check_fields(body, shape) for shape in shapes]
    return [] if "" in found else [f"{method} {template}: {found[0]}"]


def _type_name(types: tuple) -> str:
    names = {str: "a string", int: "an integer", bool: "true or false", list: "an array",
             dict: "an object", float: "a number"}
    return " or ".join(names[t] for t in types)


def _is(value, types: tuple) -> bool:
    if isinstance(value, bool):
        return bool in types
    return isinstance(value, types)


def _check(value, spec: F, where: str) -> str:
    if value is None:
        return "" if spec.nullable else f"{where}: expected {_type_name(spec.types)}, got null"
    if not _is(value, spec.types):
        return f"{where}: expected {_type_name(spec.types)}, got {json.dumps(value)[:40]}"
    if spec.enum and value not in spec.enum:
        return f"{where}: expected one of {', '.join(spec.enum)}"
    if isinstance(value, str):
        if spec.max_len is not None and len(value) > spec.max_len:
            return f"{where}: longer than {spec.max_len} characters"
        if spec.max_bytes is not None and len(value.encode()) > spec.max_bytes:
            return f"{where}: larger than {spec.max_bytes} bytes"
        if spec.pattern and not re.match(spec.pattern, value):
            return f"{where}: {value!r} does not match {spec.pattern}"
    if isinstance(value, list):
        if spec.max_items is not None and len(value) > spec.max_items:
            return f"{where}: more than {spec.max_items} items"
        for i, item in enumerate(value):
            problem = _check(item, spec.items, f"{where}[{i}]") if spec.items else ""
            if problem:
                return problem
    if isinstance(value, dict) and spec.fields is not None:
        return _check_fields(value, spec.fields, where + ".")
    return ""


def _check_fields(body: dict, fields: dict, prefix: str = "") -> str:
    for name, spec in fields.items():
        if name not in body:
            if spec.required:
                return f"{prefix}{name}: required"
            continue
        problem = _check(body[name], spec, prefix + name)
        if problem:
            return problem
    return ""


def problem(op: Operation, body) -> str:
    """The first way `body` breaks the operation's table, or ""."""
    if not isinstance(body, dict):
        return "the request body must be a JSON object"
    if op.one_of and sum(k in body and body[k] is not None for k in op.one_of) != 1:
        return f"exactly one of {', '.join(op.one_of)} is required"
    if op.any_of and not any(body.get(k) for k in op.any_of):
        return f"at least one of {', '.join(op.any_of)} is required"
    return _check_fields(body, op.fields)


def problems(method: str, template: str, body) -> list[str]:
    """For tests: what is wrong with a recorded request body (empty list: nothing)."""
    op = OPERATIONS.get((method, template))
    if op is None:
        return []
    found = problem(op, body)
    return [found] if found else []


def nulls(value, where: str = "") -> list[str]:
    """Paths of every null in a request body (an unset field should be left out instead)."""
    if value is None:
        return [where or "(body)"]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in nulls(v, f"{where}.{k}" if where else k)]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in nulls(v, f"{where}[{i}]")]
    return []


def error_body(op: Operation | None, status: int, error_id: str, message: str,
               request_id: str) -> dict:
    """An error in the shape the operation documents."""
    if op is not None and op.shape == "root_causes":
        return {"error": message, "messages": None, "root_causes": [message]}
    return {"id": error_id, "message": message, "request_id": request_id}


ERROR_IDS = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
             409: "conflict", 422: "unprocessable_entity", 429: "too_many_requests",
             500: "server_error"}

__all__ = ["F", "OPERATIONS", "Operation", "RESPONSES", "USER_DATA_MAX", "error_body", "nulls",
           "problem", "problems", "response_problems"]
