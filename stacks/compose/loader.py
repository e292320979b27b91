"""Load a stack from one or several compose files.

Per file, in the CLI's order: YAML → version → forbidden keys → interpolation
(+ type casting) → key types (stacks/compose/schema.py) → canonical shape
(stacks/compose/canonical.py); then the files are merged in order (stacks/compose/merge.py).
Every problem of every file is collected and raised as one InputError.

Working dir for every relative path (env_file, secret/config files, bind
mounts) is the folder of the first file, as with `docker stack deploy`.
Unlike the CLI, a `.env` file there is read for interpolation (process
environment wins); `env_file=` picks another file.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping

from provision.base.errors import InputError
from stacks.compose import schema
from stacks.compose.canonical import Canon
from stacks.compose.envfiles import parse_dotenv, read_text
from stacks.compose.interpolate import interpolate
from stacks.compose.merge import merge_files
from stacks.compose.problems import Problem, ComposeError, Problems
from stacks.compose.yaml_source import Path, parse

LATEST = (3, 13)


@dataclass
class Source:
    shown: str                  # the name as the user gave it
    path: str                   # absolute
    lines: dict = field(default_factory=dict)


@dataclass
class Compose:
    model: dict                 # merged, interpolated, canonical compose data
    sources: list[Source]
    workdir: str
    env: dict                   # variables used for interpolation (never printed)
    version: tuple[int, int]
    warnings: list[str] = field(default_factory=list)
    env_file: str | None = None  # the .env file read, if any

    def locate(self, path: Path) -> tuple[str | None, int | None]:
        """File and line where a key path was last written (later files win);
        falls back to the nearest written parent key."""
        path = tuple(path)
        for cut in range(len(path), 0, -1):
            for src in reversed(self.sources):
                line = src.lines.get(path[:cut])
                if line:
                    return src.shown, line
        return (self.sources[-1].shown if self.sources else None), None


def parse_version(value, problems: Problems) -> tuple[int, int]:
    if value is None or value == "" or value == "3":
        return LATEST
    if not isinstance(value, str):
        problems.add(("version",), f"expected a string such as \"3.8\", got {value!r}"
                                   " (quote it: unquoted 3.10 is the number 3.1)")
        return LATEST
    major, _, minor = value.partition(".")
    if major == "3" and minor.isdigit() and int(minor) <= LATEST[1] and minor == str(int(minor)):
        return (3, int(minor))
    problems.add(("version",), f"unsupported compose file version {value!r}: "
                               f"use 3.0 to 3.{LATEST[1]}")
    return LATEST


def read_env(workdir: str, env_file: str | None, environ: Mapping[str, str]
             ) -> tuple[dict, str | None]:
    """Interpolation variables: the .env file (given, or beside the first
    compose file if present), overridden by the process environment."""
    path = env_file or os.path.join(workdir, ".env")
    if env_file is None and not os.path.isfile(path):
        return dict(environ), None
    values = parse_dotenv(read_text(path, env_file or ".env"), env_file or path)
    return {**values, **environ}, path


def load(files: list[str], *, env_file: str | None = None,
         environ: Mapping[str, str] | None = None) -> Compose:
    if not files:
        raise InputError("no compose file given (-c FILE)")
    environ = dict(os.environ if environ is None else environ)
    workdir = os.path.dirname(os.path.abspath(files[0]))
    env, env_path = read_env(workdir, env_file, environ)
    sources, docs, versions, warnings, problems = [], [], [], [], []
    for shown in files:
        src = Source(shown, os.path.abspath(shown))
        sources.append(src)
        p = Problems(lambda path, s=src: (s.shown, s.lines.get(tuple(path))
                                          or _parent_line(s.lines, path)))
        doc = _load_one(src, env, workdir, warnings, p, versions)
        problems.extend(p.items)
        docs.append(doc)
    if not problems and len(set(versions)) > 1:
        problems.append(Problem(None, "version", "version mismatched between the compose "
                                "files: " + ", ".join(f"{s.shown} is {v[0]}.{v[1]}"
                                                      for s, v in zip(sources, versions))))
    if problems:
        raise ComposeError(problems)
    model = merge_files(docs)
    model["version"] = f"{versions[0][0]}.{versions[0][1]}"
    return Compose(model, sources, workdir, env, versions[0], warnings, env_path)


def _bare(exc: InputError) -> str:
    """The message of an InputError without its "file: " prefix."""
    prefix = f"{exc.file}: " if exc.file else ""
    return exc.message[len(prefix):] if prefix and exc.message.startswith(prefix) else exc.message


def _parent_line(lines: dict, path) -> int | None:
    path = tuple(path)
    for cut in range(len(path) - 1, 0, -1):
        if path[:cut] in lines:
            return lines[path[:cut]]
    return None


def _load_one(src: Source, env, workdir, warnings, p: Problems, versions) -> dict:
    try:
        doc, src.lines = parse(read_text(src.path, src.shown), src.shown)
    except InputError as exc:
        p.items.append(Problem(src.shown, "", _bare(exc)))
        versions.append(LATEST)
        return {}
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        p.items.append(Problem(src.shown, "", "expected a mapping at the top of the file"))
        versions.append(LATEST)
        return {}
    version = parse_version(doc.get("version"), p)
    versions.append(version)
    for key in doc:
        if isinstance(key, str) and key.startswith("x-") and version < schema.EXTENSIONS_SINCE:
            p.add((key,), f"x- fields need compose file version 3.4 or later "
                          f"(this file is {version[0]}.{version[1]})")
    for name, svc in (doc.get("services") or {}).items() if isinstance(
            doc.get("services"), dict) else ():
        for key in (svc or {}) if isinstance(svc, dict) else ():
            if key in schema.FORBIDDEN_KEYS:
                p.add(("services", name, key),
                      f"not supported by swarm: {schema.FORBIDDEN_KEYS[key]}")
    doc = interpolate(doc, env, p.add)
    schema.TOP.check(doc, (), schema.Ctx(p, version))
    if p:
        return doc
    return Canon(p, workdir, env, warnings).file(doc)
