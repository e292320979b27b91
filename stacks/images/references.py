"""Image references: parse them as the daemon does, and write them the way the Docker CLI
sends them (familiar names, `:latest` added)."""
from __future__ import annotations

import re


# distribution/reference grammar, enough to refuse what the daemon would refuse
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
_REF = re.compile(rf"^(?P<name>(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*)"
                  r"(?::(?P<tag>[\w][\w.-]{0,127}))?"
                  r"(?:@(?P<digest>[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}))?$")


def parse_image(ref: str) -> tuple[str, str | None, str | None]:
    """(name, tag, digest) of an image reference; ValueError if it cannot parse."""
    m = _REF.match(ref or "")
    if not m or len(m.group("name")) > 255:
        raise ValueError(f"invalid reference format {ref!r}")
    return m.group("name"), m.group("tag"), m.group("digest")


def familiar_image(ref: str) -> str:
    """What the Go client sends for an image: familiar name (no docker.io/library/)
    with `:latest` added when there is neither tag nor digest.  Unparsable
    references are left alone (the daemon reports them)."""
    try:
        name, tag, digest = parse_image(ref)
    except ValueError:
        return ref
    first, _, rest = name.partition("/")
    if rest and first in ("docker.io", "index.docker.io"):
        name = rest[len("library/"):] if rest.startswith("library/") and "/" not in rest[8:] else rest
    if not tag and not digest:
        tag = "latest"
    return name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
