"""The two kinds of env files a stack reads.

- `.env` (or --env-file): variables for `${VAR}` interpolation.  The Docker CLI
  reads none; swarmsmith reads the one beside the first compose file, and the
  process environment wins over it.  Format as docker compose reads it:
  `KEY=VALUE`, optional `export `, `#` comments, 'single' quotes literal,
  "double" quotes with \\n \\t \\" \\\\ escapes, unquoted values trimmed and cut at
  ` #`.  No interpolation inside the file.
- service `env_file:` entries: the CLI's kvfile rules, kept exactly: values
  verbatim (quotes and trailing spaces kept), `KEY` alone takes the deploying
  environment's value or is dropped.
"""
from __future__ import annotations

import re
from typing import Mapping

from provision.base.errors import InputError

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$"}


def read_text(path: str, shown: str) -> str:
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise InputError("file not found", file=shown) from None
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", file=shown) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError("not UTF-8 text", file=shown) from None
    return text.lstrip("\ufeff")


def parse_dotenv(text: str, shown: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for no, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if s.startswith("export "):
            s = s[7:].lstrip()
        key, sep, value = s.partition("=")
        key = key.strip()
        if not sep or not _KEY.match(key):
            raise InputError(f"line {no}: expected KEY=VALUE, got {line.strip()!r}", file=shown)
        value = value.strip()
        if value[:1] in ("'", '"'):
            q = value[0]
            end = _closing_quote(value, q)
            if end < 0:
                raise InputError(f"line {no}: unclosed quote in value of {key}", file=shown)
            body = value[1:end]
            if q == '"':
                body = re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), "\\" + m.group(1)),
                              body)
            value = body
        else:
            value = re.split(r"\s+#", value, maxsplit=1)[0].rstrip()
        out[key] = value
    return out


def _closing_quote(value: str, q: str) -> int:
    i = 1
    while i < len(value):
        if value[i] == "\\" and q == '"':
            i += 2
            continue
        if value[i] == q:
            return i
        i += 1
    return -1


def parse_kvfile(text: str, shown: str, env: Mapping[str, str]) -> dict[str, str]:
    """A service env_file, by the CLI's kvfile rules (see module docstring)."""
    out: dict[str, str] = {}
    for no, line in enumerate(text.splitlines(), 1):
        s = line.lstrip()
        if not s or s.startswith("#"):
            continue
        key, sep, value = s.partition("=")
        if any(c.isspace() for c in key):
            raise InputError(f"line {no}: variable {key!r} contains whitespaces", file=shown)
        if not key:
            raise InputError(f"line {no}: no variable name before '='", file=shown)
        if sep:
            out[key] = value
        elif key in env:
            out[key] = env[key]
    return out
