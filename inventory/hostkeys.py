"""SSH host keys pinned in the cluster file: `host_key:` per static host and `ssh.known_hosts: FILE`
(OpenSSH known_hosts form, hashed names included). Parsed and checked before any connection, so a
key that does not decode is bad input (exit 2) and never a surprise at connect time.

Keys are kept as "type base64" lines, the form the SSH executor compares.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass

KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
             "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com",
             "sk-ecdsa-sha2-nistp256@openssh.com", "ssh-dss")


def parse_key(text: str) -> str:
    """'type base64 [comment]' -> 'type base64'; ValueError saying what is wrong."""
    parts = str(text).split()
    if len(parts) < 2:
        raise ValueError('expected "KEYTYPE BASE64" (as in known_hosts or ssh_host_*_key.pub)')
    kind, blob = parts[0], parts[1]
    if kind not in KEY_TYPES:
        raise ValueError(f'unknown key type "{kind}" (expected one of {", ".join(KEY_TYPES[:5])})')
    try:
        raw = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the key is not valid base64") from None
    # the blob starts with its own type name: a key pasted under the wrong type is caught here
    if len(raw) < 4 or raw[4:4 + int.from_bytes(raw[:4], "big")] != kind.encode():
        raise ValueError(f"the key data is not a {kind} key")
    return f"{kind} {blob}"


def host_pattern(address: str, port: int = 22) -> str:
    """How known_hosts names a host: `addr`, or `[addr]:port` off port 22."""
    return address if port == 22 else f"[{address}]:{port}"


@dataclass(frozen=True)
class KnownHost:
    patterns: tuple[str, ...]     # plain names, or one "|1|salt|hash" hashed name
    key: str

    def matches(self, address: str, port: int = 22) -> bool:
        name = host_pattern(address, port)
        for p in self.patterns:
            if p.startswith("|1|"):
                _, _, salt, digest = p.split("|", 3)
                mac = hmac.new(base64.b64decode(salt), name.encode(), hashlib.sha1).digest()
                if hmac.compare_digest(base64.b64encode(mac).decode(), digest):
                    return True
            elif p == name:
                return True
        return False


def parse_known_hosts(text: str) -> list[KnownHost]:
    """known_hosts lines -> entries; ValueError('line N: ...') on the first bad one.
    @cert-authority lines are skipped (not host pins); @revoked is refused (not supported)."""
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("@cert-authority"):
            continue
        if line.startswith("@"):
            raise ValueError(f"line {n}: marker {line.split()[0]} is not supported")
        parts = line.split()
        if len(parts) < 3:
            raise ValueError(f"line {n}: expected HOSTS KEYTYPE BASE64")
        try:
            key = parse_key(" ".join(parts[1:3]))
        except ValueError as e:
            raise ValueError(f"line {n}: {e}") from None
        patterns = tuple(parts[0].split(","))
        for p in patterns:
            if p.startswith("|1|") and len(p.split("|")) != 4:
                raise ValueError(f"line {n}: malformed hashed host name")
        out.append(KnownHost(patterns, key))
    return out


def lookup(entries: list[KnownHost], address: str, port: int = 22) -> str:
    for e in entries:
        if e.matches(address, port):
            return e.key
    return ""


def known_hosts_line(address: str, port: int, key: str, comment: str = "") -> str:
    line = f"{host_pattern(address, port)} {key}"
    return f"{line} {comment}" if comment else line
