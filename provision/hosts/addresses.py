"""The advertise-address policy: private (default), public, a CIDR, or an interface name."""
from __future__ import annotations

import ipaddress

from ..base.errors import SwarmsmithError
from ..base.hosts import Host


def choose(host: Host, interfaces: dict[str, list[str]], policy: str) -> str:
    if policy == "private":
        # a host without a private network (static hosts may have none) advertises its only one
        return host.private_address or host.public_address
    if policy == "public":
        return host.public_address
    if "/" in policy:
        net = ipaddress.ip_network(policy, strict=False)
        for cidrs in interfaces.values():
            for cidr in cidrs:
                ip = cidr.split("/")[0]
                if ipaddress.ip_address(ip) in net:
                    return ip
        have = ", ".join(c.split("/")[0] for cs in interfaces.values() for c in cs) or "none"
        raise SwarmsmithError(f"no address in {policy} to advertise (host has: {have}); "
                              "check advertise_address in the cluster file", host=host.name)
    cidrs = interfaces.get(policy)
    if not cidrs:
        raise SwarmsmithError(f"no IPv4 address on interface {policy!r} to advertise (interfaces: "
                              f"{', '.join(sorted(interfaces)) or 'none'}); check advertise_address",
                              host=host.name)
    return cidrs[0].split("/")[0]
