"""`${VAR}` interpolation of compose values, and the type casting that follows it.

Syntax as the Docker CLI's `template.Substitute`: `$VAR`, `${VAR}`, `${VAR:-d}`
(d if unset or empty), `${VAR-d}` (d if unset), `${VAR:?msg}` (error if unset or
empty), `${VAR?msg}` (error if unset), `$$` for a literal `$`.  Defaults are
literal text up to the first `}` (no nesting, as in the CLI: `${A:-${B}}` gives
`${B}` when A is unset).

Where the CLI is wrong we are not (each noted here):
- the CLI picks the operator by substring (`:-`, `-`, `:?`, `?` in that order),
  so `${X:?must-be-set}` finds the `-` first and yields `be-set` without error;
  here the operator is whatever follows the name, so it errors;
- the CLI lets unbraced `$FOO-bar baz` swallow the rest of the string; here
  `$FOO` ends at the name.
"""
from __future__ import annotations

import re
from typing import Callable, Mapping

from stacks.compose.yaml_source import Path

_NAME = r"[_A-Za-z][_A-Za-z0-9]*"
_TOKEN = re.compile(
    r"\$(?:(?P<escaped>\$)"
    rf"|(?P<named>{_NAME})"
    rf"|\{{(?P<braced>{_NAME})(?:(?P<op>:-|-|:\?|\?)(?P<arg>[^}}]*))?\}}"
    r"|(?P<invalid>))")


class InterpolationError(ValueError):
    pass


def substitute(text: str, env: Mapping[str, str]) -> str:
    """`text` with variables replaced from `env`; InterpolationError on bad syntax
    or a missing required variable."""
    def repl(m: re.Match) -> str:
        if m.group("escaped"):
            return "$"
        name = m.group("named") or m.group("braced")
        if not name:
            raise InterpolationError(f"invalid interpolation format in {text!r}; "
                                     "write a literal $ as $$")
        value = env.get(name)
        op = m.group("op")
        if op == ":-":
            return value if value else m.group("arg")
        if op == "-":
            return m.group("arg") if value is None else value
        if op in (":?", "?") and (value is None or (op == ":?" and value == "")):
            msg = m.group("arg")
            raise InterpolationError(f"required variable {name} is missing a value"
                                     + (f": {msg}" if msg else ""))
        return value or ""
    return _TOKEN.sub(repl, text)


# Which interpolated values are cast, and to what (CLI `interpolateTypeCastMapping`);
# `*` matches one key.  A value is cast only when substitution changed it.
def _to_int(s: str) -> int:
    if not re.fullmatch(r"[-+]?[0-9]+", s):
        raise ValueError(f"expected an integer, got {s!r}")
    return int(s)


def _to_float(s: str) -> float:
    try:
        return float(s)
    except ValueError:
        raise ValueError(f"expected a number, got {s!r}") from None


def _to_bool(s: str) -> bool:
    low = s.lower()
    if low in ("y", "yes", "true", "on"):
        return True
    if low in ("n", "no", "false", "off"):
        return False
    raise ValueError(f"expected a boolean, got {s!r}")


_S = "services.*."
CASTS: dict[str, Callable[[str], object]] = {}
for _p in ("configs.*.mode", "secrets.*.mode", "healthcheck.retries", "deploy.replicas",
           "deploy.update_config.parallelism", "deploy.rollback_config.parallelism",
           "deploy.restart_policy.max_attempts", "deploy.placement.max_replicas_per_node",
           "ports.*.target", "ports.*.published", "ulimits.*", "ulimits.*.hard",
           "ulimits.*.soft", "oom_score_adj"):
    CASTS[_S + _p] = _to_int
for _p in ("deploy.update_config.max_failure_ratio", "deploy.rollback_config.max_failure_ratio"):
    CASTS[_S + _p] = _to_float
for _p in ("healthcheck.disable", "privileged", "read_only", "stdin_open", "tty",
           "volumes.*.read_only", "volumes.*.volume.nocopy"):
    CASTS[_S + _p] = _to_bool
for _p in ("networks.*.external", "networks.*.internal", "networks.*.attachable",
           "volumes.*.external", "secrets.*.external", "configs.*.external"):
    CASTS[_p] = _to_bool
_CAST_PATTERNS = [(tuple(k.split(".")), f) for k, f in CASTS.items()]


def _cast_for(path: Path):
    for pattern, fn in _CAST_PATTERNS:
        if len(pattern) == len(path) and all(p == "*" or p == str(k)
                                             for p, k in zip(pattern, path)):
            return fn
    return None


def interpolate(data, env: Mapping[str, str], errors: Callable[[Path, str], None],
                path: Path = ()):
    """A copy of `data` with every string value interpolated and cast (keys are
    left alone).  Each problem is reported through errors(path, message)."""
    if isinstance(data, dict):
        return {k: interpolate(v, env, errors, path + (k,)) for k, v in data.items()}
    if isinstance(data, list):
        return [interpolate(v, env, errors, path + (i,)) for i, v in enumerate(data)]
    if not isinstance(data, str) or "$" not in data:
        return data
    try:
        out = substitute(data, env)
    except InterpolationError as exc:
        errors(path, str(exc))
        return data
    cast = _cast_for(path) if out != data else None
    if cast is None:
        return out
    try:
        return cast(out)
    except ValueError:  # left as a string: the type check reports it with the right words
        return out
