"""Collect every problem in the compose files, then raise one InputError (exit 2)
that lists them all, each as `file: key.path: what was expected (line N)`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from provision.base.errors import InputError
from stacks.compose.yaml_source import Path, format_path


@dataclass(frozen=True)
class Problem:
    file: str | None
    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        head = ": ".join(p for p in (self.file, self.path) if p)
        tail = f" (line {self.line})" if self.line else ""
        return f"{head}: {self.message}{tail}" if head else self.message + tail


class ComposeError(InputError):
    """One or more problems; `.problems` lists them."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        if len(problems) == 1:
            p = problems[0]
            tail = f" (line {p.line})" if p.line else ""
            super().__init__(p.message + tail, file=p.file, path=p.path or None)
        else:
            body = "\n".join(f"  {p}" for p in problems)
            super().__init__(f"{len(problems)} problems in the compose files:\n{body}")


Locator = Callable[[Path], "tuple[str | None, int | None]"]


class Problems:
    """locate(path) -> (file, line) says where a key path was written."""

    def __init__(self, locate: Locator):
        self.locate = locate
        self.items: list[Problem] = []

    def add(self, path: Path, message: str) -> None:
        file, line = self.locate(tuple(path))
        self.items.append(Problem(file, format_path(path), message, line))

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_any(self) -> None:
        if self.items:
            seen, unique = set(), []
            for p in self.items:
                if p not in seen:
                    seen.add(p)
                    unique.append(p)
            raise ComposeError(unique)


def describe(value) -> str:
    """How a wrong value is shown in a message: `"three"`, `3`, `a list`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        return '"' + value.replace('"', '\\"') + '"'
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return str(value)
