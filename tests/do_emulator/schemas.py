"""Request bodies the emulator accepts, one table per operation, and the answer to a body that
breaks its table (status code and error shape differ between operations, as DigitalOcean
publishes them).

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


def _type_name(types: tuple) -> str:
    names = {str: "a string", int: "an integer", bool: "true or false", list: "an array",
             dict: "an object"}
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

__all__ = ["F", "OPERATIONS", "Operation", "USER_DATA_MAX", "error_body", "nulls", "problem",
           "problems"]
