"""Parse compose YAML the way the Docker CLI's YAML library (go yaml v3) reads it,
and remember on which line every key path was written.

pyyaml speaks YAML 1.1, the CLI YAML 1.2-ish: `yes/no/on/off` stay strings,
`22:22` is a string (1.1 reads sexagesimal 1342, which silently breaks short
port syntax), dates stay strings; `0440` is still octal (yaml v3 keeps that) and
`0o440` too.  Anchors, aliases and `<<` merge keys work as in pyyaml.
"""
from __future__ import annotations

import re

import yaml

from provision.base.errors import InputError
from inventory.yaml_keys import refuse_duplicate_keys

Path = tuple  # ("services", "web", "ports", 0)


class _Resolver(yaml.resolver.BaseResolver):
    pass


_IMPLICIT = [
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("tag:yaml.org,2002:int",
     r"^(?:[-+]?0b[01]+|[-+]?0o?[0-7]+|[-+]?(?:0|[1-9][0-9]*)|[-+]?0x[0-9a-fA-F]+)$",
     "-+0123456789"),
    ("tag:yaml.org,2002:float",
     r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
     r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$", "-+0123456789."),
    ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    ("tag:yaml.org,2002:merge", r"^(?:<<)$", ["<"]),
]
for _tag, _rx, _first in _IMPLICIT:
    _Resolver.add_implicit_resolver(_tag, re.compile(_rx), list(_first))


class _Loader(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser,
              yaml.composer.Composer, yaml.constructor.SafeConstructor, _Resolver):
    def __init__(self, stream):
        yaml.reader.Reader.__init__(self, stream)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)
        yaml.composer.Composer.__init__(self)
        yaml.constructor.SafeConstructor.__init__(self)
        _Resolver.__init__(self)


def _construct_int(loader, node):
    # Go: "0o17", "017" octal; "0x1f" hex; "0b101" binary; no "_" and no sexagesimal
    text = loader.construct_scalar(node)
    sign = -1 if text.startswith("-") else 1
    body = text.lstrip("+-")
    if body.startswith(("0x", "0b", "0o")):
        return sign * int(body, 0)
    if len(body) > 1 and body.startswith("0"):
        return sign * int(body, 8)
    return sign * int(body)


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def parse(text: str, file: str) -> tuple[object, dict[Path, int]]:
    """(data, {key path: line number}) of one YAML document."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        refuse_duplicate_keys(node, file)
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise InputError(f"invalid YAML: {problem}{where}", file=file) from None
    finally:
        loader.dispose()
    lines: dict[Path, int] = {}
    if node is not None:
        _walk(node, (), lines)
    return data, lines


def _walk(node, path: Path, lines: dict) -> None:
    if isinstance(node, yaml.MappingNode):
        merged = []
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                merged.append(value_node)
                continue
            sub = path + (key_node.value,)
            lines[sub] = key_node.start_mark.line + 1
            _walk(value_node, sub, lines)
        for value_node in merged:  # keys pulled in by `<<` point at the anchor's lines
            for src in (value_node.value if isinstance(value_node, yaml.SequenceNode)
                        else [value_node]):
                extra: dict = {}
                _walk(src, path, extra)
                for k, v in extra.items():
                    lines.setdefault(k, v)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[path + (i,)] = item.start_mark.line + 1
            _walk(item, path + (i,), lines)


def dump(data) -> str:
    """YAML text for `swarmsmith config`: keys in the order given, strings quoted
    when pyyaml would otherwise re-read them as something else."""
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True,
                          width=1000)


def format_path(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


# --- writing YAML as the Docker CLI's `docker stack config` does (go yaml v3) ------------

_OLD_BOOLS = {"y", "Y", "yes", "Yes", "YES", "on", "On", "ON",
              "n", "N", "no", "No", "NO", "off", "Off", "OFF"}
_GO_SPECIAL = {"", "~", "null", "Null", "NULL", "true", "True", "TRUE", "false", "False",
               "FALSE", ".nan", ".NaN", ".NAN", ".inf", ".Inf", ".INF", "+.inf", "+.Inf",
               "+.INF", "-.inf", "-.Inf", "-.INF", "<<"}
_BASE60 = re.compile(r"^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$")
_GO_FLOAT = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")
_GO_INT = re.compile(r"^[-+]?(0[bB][01]+|0[oO]?[0-7]+|0[xX][0-9a-fA-F]+|[0-9]+)$")
_TIMESTAMP = re.compile(r"^[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}"
                        r"(?:[Tt ][0-9]{1,2}:[0-9]{1,2}:[0-9]{1,2}(?:\.[0-9]+)?"
                        r"(?:Z|[-+][0-9]{2}:[0-9]{2})?)?$")


def go_quotes(s: str) -> bool:
    """Whether go yaml v3 writes this string double-quoted: it would read back as
    something else (null, bool, number, timestamp), or is a YAML 1.1 bool or
    sexagesimal number that older readers would misread."""
    if s in _GO_SPECIAL or s in _OLD_BOOLS or _BASE60.match(s):
        return True
    if s[0] in "+-.0123456789":
        plain = s.replace("_", "")
        return bool(_TIMESTAMP.match(s) or _GO_INT.match(plain) or _GO_FLOAT.match(plain))
    return False


class _GoDumper(yaml.emitter.Emitter, yaml.serializer.Serializer,
                yaml.representer.SafeRepresenter, _Resolver):
    """Block style, sequences indented under their key, no line wrapping; scalar
    styles chosen as go yaml v3 chooses them."""

    def __init__(self, stream, **kw):
        yaml.emitter.Emitter.__init__(self, stream, indent=2, width=10**9, allow_unicode=True)
        yaml.serializer.Serializer.__init__(self)
        yaml.representer.SafeRepresenter.__init__(self, default_flow_style=False,
                                                  sort_keys=False)
        _Resolver.__init__(self)

    def increase_indent(self, flow=False, indentless=False):
        return super().increase_indent(flow, False)


def _go_str(dumper, s: str):
    if "\n" in s:
        return dumper.represent_scalar("tag:yaml.org,2002:str", s, style="|")
    if go_quotes(s):
        return dumper.represent_scalar("tag:yaml.org,2002:str", s, style='"')
    return dumper.represent_scalar("tag:yaml.org,2002:str", s)


_GoDumper.add_representer(str, _go_str)


def dump_like_go(data) -> str:
    """YAML text in the shape `docker stack config` prints (keys in the order given)."""
    return yaml.dump(data, Dumper=_GoDumper)
