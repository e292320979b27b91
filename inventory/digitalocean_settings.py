"""The `digitalocean:` settings of a cluster file: every documented limit checked before the
first request (region/size/image formats, private image ids, user_data size, VPC range, tag
rules, finite bounded seconds), and the SSH key's MD5 fingerprint DigitalOcean names keys by.
Pure validation: provision/hosts/digitalocean.py (the provider) uses the result."""
from __future__ import annotations

import base64
import hashlib
import ipaddress
import math
import os
import re

from inventory.errors import InputError

ALL = ["0.0.0.0/0", "::/0"]
NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
# The API's documented limits, checked before the first request (a refusal mid-run would come
# after the SSH key and the VPC were made).
TAG_RE = re.compile(r"^[a-zA-Z0-9_:-]{1,255}$")
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
PORT_RE = re.compile(r"^(\d{1,5})(?:-(\d{1,5}))?(?:/(tcp|udp))?$")
REGION_RE = re.compile(r"^[a-z]{3}[0-9]$")                # fra1, nyc3, sgp1
SIZE_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")      # s-1vcpu-1gb, so1_5-2vcpu-16gb
IMAGE_SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")   # ubuntu-24-04-x64
USER_DATA_MAX = 64 * 1024                                  # bytes
RFC1918 = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))
VPC_PREFIXES = (16, 28)                                    # no larger than /16, no smaller than /28
MAX_SECONDS = 86400.0

DEFAULTS = {"ssh_private_key": None, "user": "root", "vpc": "create", "vpc_ip_range": None,
            "monitoring": False, "ipv6": False, "user_data": None, "tags": [], "firewall": True,
            "ssh_sources": ALL, "published_ports": [], "wait_timeout": 600.0,
            "ssh_timeout": 300.0, "poll_interval": 5.0, "list_lag": 60.0}
REQUIRED = ("region", "size", "image", "ssh_key")


# --- settings -----------------------------------------------------------------------------
def validate_settings(settings, file: str | None = None, path_prefix: str = "digitalocean", *,
                      base_dir: str | None = None) -> dict:
    """Check the provider's section of the cluster file; return it with defaults filled in.
    Errors name the file and key path: `cluster.yml: digitalocean.region: expected a string`."""
    def fail(key, message):
        raise InputError(message, file=file, path=f"{path_prefix}.{key}" if key else path_prefix)

    if not isinstance(settings, dict):
        fail("", "expected a mapping")
    unknown = sorted(set(settings) - set(DEFAULTS) - set(REQUIRED))
    if unknown:
        fail(unknown[0], f"unknown key (known: {', '.join(sorted([*REQUIRED, *DEFAULTS]))})")
    out = {**DEFAULTS, **settings}
    for key in REQUIRED:
        if key not in settings:
            fail(key, "required")
    for key in ("region", "size", "ssh_key", "user"):
        if not isinstance(out[key], str) or not out[key].strip():
            fail(key, "expected a string")
    if not REGION_RE.match(out["region"]):
        fail("region", f"{out['region']!r} is not a region slug (such as fra1)")
    if not SIZE_RE.match(out["size"]):
        fail("size", f"{out['size']!r} is not a size slug (such as s-1vcpu-1gb)")
    out["image"] = _image(out["image"], lambda m: fail("image", m))
    for key in ("ssh_private_key", "vpc_ip_range", "user_data"):
        if out[key] is not None and not isinstance(out[key], str):
            fail(key, "expected a string")
    for key in ("monitoring", "ipv6", "firewall"):
        if not isinstance(out[key], bool):
            fail(key, "expected true or false")
    for key in ("wait_timeout", "ssh_timeout", "poll_interval", "list_lag"):
        if (isinstance(out[key], bool) or not isinstance(out[key], (int, float))
                or not math.isfinite(out[key]) or not 0 < out[key] <= MAX_SECONDS):
            fail(key, f"expected a number of seconds from 0 to {MAX_SECONDS:g}")
        out[key] = float(out[key])
    if out["user_data"] is not None and len(out["user_data"].encode()) > USER_DATA_MAX:
        fail("user_data", f"{len(out['user_data'].encode())} bytes; DigitalOcean takes at most "
                          f"{USER_DATA_MAX} (64 KiB)")

    base = base_dir or os.getcwd()
    out["ssh_key"] = os.path.join(base, os.path.expanduser(out["ssh_key"]))
    try:
        with open(out["ssh_key"]) as f:
            out["_public_key"] = f.read().strip()
    except OSError as e:
        fail("ssh_key", f"cannot read public key {out['ssh_key']}: {e.strerror}")
    if md5_fingerprint(out["_public_key"]) is None:
        fail("ssh_key", f"{out['ssh_key']} is not an OpenSSH public key")
    if out["ssh_private_key"] is None:
        private = out["ssh_key"][:-4] if out["ssh_key"].endswith(".pub") else ""
        out["ssh_private_key"] = private if private and os.path.exists(private) else ""
    else:
        out["ssh_private_key"] = os.path.join(base, os.path.expanduser(out["ssh_private_key"]))

    vpc = out["vpc"]
    if not isinstance(vpc, str) or not (vpc in ("create", "default") or UUID_RE.match(vpc)):
        fail("vpc", "expected 'create', 'default' or a VPC id (uuid)")
    if out["vpc_ip_range"] is not None:
        if vpc != "create":
            fail("vpc_ip_range", "only used with vpc: create")
        out["vpc_ip_range"] = _vpc_range(out["vpc_ip_range"], lambda m: fail("vpc_ip_range", m))

    if not isinstance(out["tags"], list):
        fail("tags", "expected a list of tags")
    for i, t in enumerate(out["tags"]):
        if not isinstance(t, str) or not TAG_RE.match(t):
            fail(f"tags[{i}]", f"{t!r} is not a tag: 1 to 255 letters, digits, '_', ':' and '-'")
        if t.lower().startswith("swarmsmith:"):
            fail(f"tags[{i}]", "tags starting with 'swarmsmith:' are swarmsmith's own")
    out["ssh_sources"] = _cidrs(out["ssh_sources"], lambda m: fail("ssh_sources", m))
    if not isinstance(out["published_ports"], list):
        fail("published_ports", "expected a list")
    out["published_ports"] = [
        _published(p, lambda m, i=i: fail(f"published_ports[{i}]", m))
        for i, p in enumerate(out["published_ports"])]
    return out


def _image(value, fail) -> str | int:
    """A public image's slug, or the integer id of any image (private images have no slug)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 < value < 2 ** 63:
            fail(f"{value} is not an image id (a positive integer)")
        return value
    if not isinstance(value, str) or not value.strip():
        fail("expected an image slug (such as ubuntu-24-04-x64) or an image id (an integer)")
    if value.isdigit():
        return _image(int(value), fail)
    if not IMAGE_SLUG_RE.match(value):
        fail(f"{value!r} is not an image slug (such as ubuntu-24-04-x64) or id")
    return value


def _vpc_range(value, fail) -> str:
    """DigitalOcean takes VPC ranges inside RFC 1918, from /16 to /28."""
    try:
        net = ipaddress.ip_network(value)
    except ValueError:
        fail(f"{value!r} is not a CIDR range such as 10.20.0.0/20 (host bits must be zero)")
    if net.version != 4 or not any(net.subnet_of(r) for r in RFC1918):
        fail(f"{value} is outside the private ranges of RFC 1918 (10.0.0.0/8, 172.16.0.0/12, "
             "192.168.0.0/16)")
    if not VPC_PREFIXES[0] <= net.prefixlen <= VPC_PREFIXES[1]:
        fail(f"{value}: a VPC range is from /{VPC_PREFIXES[0]} (largest) to "
             f"/{VPC_PREFIXES[1]} (smallest)")
    return str(net)


def _cidrs(value, fail) -> list[str]:
    if not isinstance(value, list) or not value:
        fail("expected a non-empty list of addresses or CIDR ranges")
    for v in value:
        try:
            if not isinstance(v, str):
                raise TypeError(v)
            ipaddress.ip_network(v, strict=False)
        except (ValueError, TypeError):
            fail(f"{v!r} is not an address or CIDR range")
    return list(value)


def _published(p, fail) -> dict:
    """80, "443", "53/udp", "8000-8010/tcp" or {port, protocol, sources}."""
    if isinstance(p, dict):
        unknown = set(p) - {"port", "protocol", "sources"}
        if unknown or "port" not in p:
            fail("expected keys port, protocol, sources")
        spec, protocol, sources = str(p["port"]), p.get("protocol", "tcp"), p.get("sources", ALL)
    elif isinstance(p, (int, str)) and not isinstance(p, bool):
        spec, protocol, sources = str(p), None, ALL
    else:
        fail("expected a port, 'port/protocol' or a mapping")
    m = PORT_RE.match(spec)
    if not m:
        fail(f"{spec!r} is not a port, range or 'port/protocol'")
    protocol = protocol or m.group(3) or "tcp"
    if protocol not in ("tcp", "udp"):
        fail("protocol must be tcp or udp")
    low, high = int(m.group(1)), int(m.group(2) or m.group(1))
    if not 1 <= low <= high <= 65535:
        fail(f"{spec!r}: ports run from 1 to 65535")
    ports = str(low) if low == high else f"{low}-{high}"
    return {"protocol": protocol, "ports": ports,
            "sources": _cidrs(sources, fail)}


def md5_fingerprint(public_key: str) -> str | None:
    """DigitalOcean identifies keys by the MD5 of the key blob (comment and spacing ignored)."""
    parts = public_key.split()
    if len(parts) < 2 or not parts[0].startswith(("ssh-", "ecdsa-", "sk-")):
        return None
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except ValueError:
        return None
    digest = hashlib.md5(blob).hexdigest()
    return ":".join(digest[i:i + 2] for i in range(0, 32, 2))
